"""The `strata` command line: one clear line and exit code 2 on bad input; a real run through it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


pytestmark = pytest.mark.slow  # trains stages or runs flows


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_every_command():
    result = _invoke("--help")
    assert result.exit_code == 0
    for cmd in ("demo-data", "preprocess", "train", "evaluate", "generate", "serve"):
        assert cmd in result.output


def test_missing_folders_give_one_line_errors(tmp_path):
    missing = tmp_path / "nope"
    cases = [
        ("preprocess", "--raw", str(missing), "--out", str(tmp_path / "d")),
        ("train", "--data", str(missing), "--run", str(tmp_path / "r")),
        ("evaluate", "--data", str(missing), "--run", str(tmp_path / "r")),
        ("generate", "--run", str(missing), "--out", str(tmp_path / "o")),
    ]
    for args in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0], lines
        assert "Traceback" not in result.output


def test_bad_split_is_refused(tmp_path):
    result = _invoke("evaluate", "--data", str(tmp_path), "--run", str(tmp_path), "--split", "holdout")
    assert result.exit_code == 2
    assert "holdout" in result.output


def test_train_on_empty_dataset_folder_is_a_clear_error(tmp_path, prefect_harness):
    result = _invoke("train", "--data", str(tmp_path), "--run", str(tmp_path / "run"), "--max-steps", "1")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "manifest" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_generate_bad_parameters_are_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for args, word in ((("--temperature", "0"), "temperature"), (("--count", "0"), "count"),
                       (("--seconds", "-3"), "seconds"), (("--midi", str(tmp_path / "x.mid")), "midi")):
        result = _invoke("generate", "--run", str(run), "--out", str(tmp_path / "o"), *args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and word in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_preprocess_command_writes_a_dataset(tmp_path, prefect_harness):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(3 * sr) / sr
    for genre in ("drone", "noise"):
        (raw / genre).mkdir(parents=True)
        for i in range(2):
            if genre == "drone":
                tone = 0.5 * np.sin(2 * np.pi * (110 + 40 * i) * t)
            else:
                tone = 0.3 * rng.standard_normal(t.size)
            sf.write(raw / genre / f"take{i}.wav", tone.astype(np.float32), sr)
    (raw / "noise" / "notes.txt").write_text("not audio")
    out = tmp_path / "data"
    result = _invoke("preprocess", "--raw", str(raw), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["genres"] == ["drone", "noise"]
    assert len(manifest["tracks"]) == 4
    report = json.loads((out / "report.json").read_text())
    assert any("notes.txt" in s["path"] for s in report["skipped"])
