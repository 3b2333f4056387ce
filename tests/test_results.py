"""The committed results: the README's result sections are the JSONs' (docs/results/tables.py), every
result JSON names the commit and the command that made it, and no committed page, script or result names
a folder of the machine it was made on (a reader cannot rerun ``/work/exp/...``)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_FOLDERS = ("docs/results", "bench/results")
PUBLISHED = ("README.md", "docs", "bench")
# an absolute path under a folder that belongs to one machine or user (system paths such as /usr/share are not)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users|mnt|scratch|data)/[^\s\"'`)\],]*")
COMMIT = re.compile(r"^[0-9a-f]{7,40}(-dirty)?$")


def _tables():
    path = ROOT / "docs" / "results" / "tables.py"
    spec = importlib.util.spec_from_file_location("results_tables", path)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables


def committed(*paths: str) -> list[Path]:
    """Files under ``paths`` that git tracks (every file there when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *paths], cwd=ROOT, capture_output=True, check=True)
        return [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for p in paths:
            found += [ROOT / p] if (ROOT / p).is_file() else [f for f in (ROOT / p).rglob("*") if f.is_file()]
        return found


def test_readme_tables_match_the_result_jsons():
    tables = _tables()
    text = tables.README.read_text()
    for name in tables.SECTIONS:  # every generated section is in the README, once
        assert text.count(f"<!-- results:{name} -->") == 1 and text.count(f"<!-- /results:{name} -->") == 1, name
    assert tables.render(text) == text, "README tables differ from docs/results: run python docs/results/tables.py"


def test_a_missing_result_file_is_said_not_dropped(tmp_path, monkeypatch, capsys):
    tables = _tables()
    bench = tmp_path / "bench" / "results"
    shutil.copytree(tables.BENCH, bench)
    (bench / "training.json").unlink()
    monkeypatch.setattr(tables, "BENCH", bench)
    monkeypatch.setattr(tables, "README", tmp_path / "README.md")
    table = tables.bench_table()
    assert "Not shown: `bench/results/training.json` is missing." in table
    assert "`bench/training.py`" not in table
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert err == ["warning: bench/results/training.json not found: its rows are left out of the README"]


def test_every_result_names_its_commit_and_command():
    """Each JSON under docs/results and bench/results says at which commit and by which command it was made."""
    problems = []
    files = [p for p in committed(*RESULT_FOLDERS) if p.suffix == ".json"]
    assert files
    for path in files:
        data = json.loads(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        if not isinstance(data, dict):
            problems.append(f"{rel}: a {type(data).__name__}, not an object with commit and command")
            continue
        lacks = [k for k in ("commit", "command") if not isinstance(data.get(k), str) or not data[k].strip()]
        if lacks:
            problems.append(f"{rel}: no {' and no '.join(lacks)}")
        elif not COMMIT.match(data["commit"]):
            problems.append(f"{rel}: commit {data['commit']!r} is not a commit id")
    assert not problems, "\n".join(problems)


def test_no_committed_file_names_a_folder_of_this_machine():
    problems = []
    for path in committed(*PUBLISHED):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images, audio)
        hits = sorted({m.group(0) for m in MACHINE_PATH.finditer(text)})
        if hits:
            problems.append(f"{path.relative_to(ROOT).as_posix()}: {len(hits)} machine path(s), e.g. {hits[:3]}")
    assert not problems, "\n".join(problems)
