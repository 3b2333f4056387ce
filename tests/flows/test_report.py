"""The listening report of a small trained run: a self-contained folder, opened in headless Chromium
(every <audio> and <img> loads from file://, no console errors, the evaluation shows the run's numbers),
the `strata report` command and the report flow's link artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from pipeline.evaluation.evaluate import evaluate_run
from pipeline.generation.generate import generate
from pipeline.report.build import ReportError, build_report, fmt, is_report
from pipeline.run import evaluation_path
from pipeline.training.train import train_stage
from tests.helpers_browser import find_chromium, inspect_page
from tests.helpers_data import make_dataset, tiny_train_config
from tests.helpers_run import write_midi

pytestmark = pytest.mark.slow  # trains stages or runs flows

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # screenshots (ignored by git)
GENRES = ("alpha", "beta")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A tiny trained run with curves and an evaluation, two jobs per genre (one grid) and one from MIDI."""
    root = tmp_path_factory.mktemp("report")
    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=2.0, roll="notes", genres=GENRES,
                        splits={"train": 4, "valid": 2, "test": 2})
    cfg = tiny_train_config(max_steps=20, eval_every=10, log_every=5, checkpoint_every=1000, ema_decay=0.9)
    run = root / "run"
    for k in (0, 1):
        train_stage(data, run, cfg, k, progress=False)
    ev = evaluate_run(data, run, split="test", max_seconds_per_track=1.0, progress=False)
    evaluation_path(run, "test").write_text(json.dumps(ev))
    jobs = root / "jobs"
    for genre in GENRES:
        generate(run, jobs, genre=genre, seconds=0.5, count=2, seed=1, progress=False)
    generate(run, jobs, midi=write_midi(root / "tune.mid", notes=((60, 0.0, 0.2), (64, 0.2, 0.4))), seconds=0.4,
             progress=False)
    result = build_report(run, root / "report", jobs=[jobs], data_dir=data)
    return {"root": root, "data": data, "run": run, "jobs": jobs, "evaluation": ev, "result": result}


def _links(index: Path) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', index.read_text())


def test_report_folder_is_self_contained(small):
    result, ev = small["result"], small["evaluation"]
    index = result.index
    html = index.read_text()
    assert is_report(result.folder) and result.jobs == 5 and result.clips == 2 and not result.skipped
    links = [u for u in _links(index) if not u.startswith("data:")]
    assert links and all(not re.match(r"^[a-z]+:", u) and not u.startswith("/") for u in links)  # relative
    assert all((result.folder / u).is_file() for u in links)
    # each job's score as MIDI: only the MIDI-prompted piece had one (this run has no score tier nor chain)
    assert [u for u in links if u.endswith("/score.mid")] and sum(u.endswith("/score.mid") for u in links) == 1
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("<audio") == 5 * 3 + 4 + 2 + 2  # jobs (output + 2 tiers), grid (4 jobs, 2 real), real clips
    assert 'id="grid-0"' in html and 'id="real"' in html and "tune.mid" in html
    for stage in ev["stages"]:
        assert f"<td>{fmt(stage['bits_per_sample'])}</td>" in html
    assert result.bytes == sum(p.stat().st_size for p in result.folder.rglob("*") if p.is_file())
    assert all(oct(p.stat().st_mode)[-3:] == "644" for p in result.folder.rglob("*") if p.is_file())


def test_report_rebuilds_in_place_and_refuses_other_folders(small, tmp_path):
    run, jobs = small["run"], small["jobs"]
    out = tmp_path / "r"
    build_report(run, out, jobs=[jobs])
    (out / "stale.txt").write_text("from an earlier report")
    again = build_report(run, out)  # an earlier report is replaced as a whole
    assert again.jobs == 0 and not (out / "stale.txt").exists() and not list(tmp_path.glob(".*"))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(ReportError, match="not a Strata report"):
        build_report(run, precious)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="would replace the input"):
        build_report(run, empty, jobs=[empty])
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "missing", tmp_path / "r2")
    assert (precious / "thesis.tex").read_text() == "x" and not (tmp_path / "r2").exists()


def _browser() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("STRATA_BROWSER_TESTS") == "required":
            pytest.fail("STRATA_BROWSER_TESTS=required but no Chromium is installed (apt-get install chromium)")
        pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it and requires this test)")
    return binary


def test_report_in_headless_chromium(small):
    binary = _browser()
    result, ev = small["result"], small["evaluation"]
    shot = ARTIFACTS / "report.png"
    page = inspect_page(result.index.as_uri(), screenshot=shot, binary=binary)
    print(f"screenshot: {shot}")
    assert page["problems"] == {"console": [], "exceptions": [], "failed": [], "http": []}
    assert len(page["audio"]) == 23 and len(page["images"]) >= 5 + 4 + 2 + 2 + 1
    bad_audio = [a for a in page["audio"] if a["ready"] < 1 or a["error"] or not a["duration"] > 0]
    bad_images = [i for i in page["images"] if not i["complete"] or i["width"] == 0]
    assert not bad_audio and not bad_images
    assert all(a["src"].startswith(result.folder.as_uri()) for a in page["audio"])
    (table,) = [t for t in page["tables"] if t.startswith("Held-out bits per sample")]
    for stage in ev["stages"]:
        row = next(line for line in table.splitlines() if line.startswith(f"{stage['index']}\t"))
        cells = row.split("\t")
        assert cells[2:4] == [fmt(stage["bits_per_sample"]), fmt(stage["linear_baseline_bits_per_sample"])]
    assert page["scripts"] == 0 and page["phone_width"] <= 390  # no sideways scrolling on a phone
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chromium_check_sees_missing_media(small, tmp_path):
    """The browser check has teeth: a deleted WAV and PNG show up as failed loads."""
    binary = _browser()
    copy = tmp_path / "broken"
    shutil.copytree(small["result"].folder, copy)
    next(copy.glob("media/jobs/*/tier_*.wav")).unlink()
    (copy / "media/run/curves.png").unlink()
    page = inspect_page(copy.as_uri() + "/index.html", binary=binary, media_timeout=10)
    assert len(page["problems"]["failed"]) >= 2
    assert sum(a["error"] is not None or a["ready"] < 1 for a in page["audio"]) == 1
    assert sum(i["width"] == 0 for i in page["images"]) == 1


def test_cli_report(small, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "cli"
    args = ["report", "--run", str(small["run"]), "--jobs", str(small["jobs"]), "--data", str(small["data"]),
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'index.html'} (5 jobs, 2 real clips" in result.output and is_report(out)
    bad = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and bad.output.strip() == f"error: {tmp_path / 'nope'}: run folder does not exist"
    bad = CliRunner().invoke(app, ["report", "--run", str(small["data"]), "--out", str(out)])
    assert bad.exit_code == 2 and "not a run folder" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_report_flow_publishes_a_link(prefect_harness, small, tmp_path):
    from flows.report import report_flow
    from tests.flows.test_generate_flow import _artifacts

    index = report_flow(str(small["run"]), str(tmp_path / "flow"), jobs=[str(small["jobs"])])
    (link,) = _artifacts("report")
    assert link.type == "markdown" and f"({Path(index).as_uri()})" in link.data and Path(index).is_file()
