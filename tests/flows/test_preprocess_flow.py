"""flows.preprocess under a real Prefect API: skip reporting, artifacts, caching, crash resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.test_preprocess import make_bad_corpus, tone, write_midi, write_wav

ROOT = Path(__file__).resolve().parents[2]

# Runs the flow with every file slowed down, so the test can kill it part-way through.
SLOW_FLOW = """
import sys, time
import pipeline.corpus.preprocess as pp
original = pp.preprocess_file
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[3]))
    return original(*args, **kwargs)
pp.preprocess_file = slow
from flows.preprocess import preprocess_flow
preprocess_flow(sys.argv[1], sys.argv[2])
"""


pytestmark = pytest.mark.slow  # trains stages or runs flows


def good_corpus(raw: Path, n: int = 8) -> Path:
    for i in range(n):
        genre = ("folk", "chorale")[i % 2]
        write_wav(raw / genre / f"piece{i}.wav", tone(2.5 + 0.25 * i, 16000, 180 + 40 * i))
        if genre == "chorale":
            write_midi(raw / genre / f"piece{i}.mid", [(55 + i, 0.1, 1.5, 90)])
    return raw


def npy_state(out: Path) -> dict[str, tuple[int, bytes]]:
    """relative path -> (mtime_ns, content) of every array in a dataset folder."""
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.npy")}


def flow_artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        arts = client.read_artifacts(artifact_filter=run_filter)
    return {a.key: a for a in arts}


def test_flow_skips_bad_files_and_reports(prefect_harness, tmp_path):
    from flows.preprocess import preprocess_flow

    expect = make_bad_corpus(tmp_path / "raw")
    state = preprocess_flow(str(tmp_path / "raw"), str(tmp_path / "out"), return_state=True)
    summary = state.result()
    assert summary["tracks"] == 7 and summary["skipped"] == len(expect)
    report = json.loads((tmp_path / "out/report.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == set(expect)
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]
    arts = flow_artifacts(state.state_details.flow_run_id)
    table = json.loads(arts["preprocess-skipped"].data)
    assert {Path(r["path"]).name: r["reason"] for r in table} == reasons
    md = arts["preprocess-summary"].data
    assert "7 tracks" in md and "good" in md and "Chœur" in md and "| **all** |" in md
    for name, part in expect.items():
        assert name in md and part.lower() in md.lower()


def test_flow_caches_and_checks_outputs(prefect_harness, tmp_path):
    from flows.preprocess import preprocess_flow

    raw, out = good_corpus(tmp_path / "raw", 4), tmp_path / "out"
    first = preprocess_flow(str(raw), str(out))
    assert (first["cached"], first["computed"], first["tracks"]) == (0, 4, 4)
    before = npy_state(out)
    again = preprocess_flow(str(raw), str(out))
    assert (again["cached"], again["computed"]) == (4, 0)
    assert npy_state(out) == before  # nothing rewritten
    manifest = json.loads((out / "manifest.json").read_text())
    lost = out / manifest["tracks"][0]["tiers"]["8000"]
    lost.unlink()
    third = preprocess_flow(str(raw), str(out))
    assert third["computed"] == 1 and third["cached"] == 3 and lost.is_file()
    (tmp_path / "cfg.yaml").write_text("data: {trim_db: 30.0}\n")
    other = preprocess_flow(str(raw), str(out), str(tmp_path / "cfg.yaml"))
    assert other["computed"] == 4  # new settings: new cache keys


def test_flow_marks_the_excerpts_metadata_csv_names_and_a_cached_rerun_follows_the_column(prefect_harness, tmp_path):
    from flows.preprocess import preprocess_flow

    raw, out = tmp_path / "raw", tmp_path / "out"
    for i in range(4):
        write_wav(raw / f"t{i}.wav", tone(2.5, 16000, 200 + 50 * i))

    def run(flags: str) -> dict[str, bool]:
        rows = "".join(f"t{i}.wav,rec,{f}\n" for i, f in enumerate(flags.split(",")))
        (raw / "metadata.csv").write_text("path,genre,excerpt\n" + rows)
        preprocess_flow(str(raw), str(out), estimate_scores=False)
        manifest = json.loads((out / "manifest.json").read_text())
        return {Path(t["source"]).name: t["excerpt"] for t in manifest["tracks"]}

    assert run("true,,no,1") == {"t0.wav": True, "t1.wav": False, "t2.wav": False, "t3.wav": True}
    assert json.loads((out / "report.json").read_text())["counts"]["excerpts"] == 2
    assert run(",,,yes") == {"t0.wav": False, "t1.wav": False, "t2.wav": False, "t3.wav": True}  # all cached


def test_flow_estimates_scores_caches_them_and_no_estimate_turns_them_off(prefect_harness, tmp_path):
    """Tracks without MIDI get an estimated roll; a rerun comes from the cache; --no-estimate
    (estimate_scores=False) is a new cache key and leaves them without a roll."""
    from flows.preprocess import preprocess_flow
    from tests.pipeline.test_estimated_scores import corpus

    raw, out = tmp_path / "raw", tmp_path / "out"
    corpus(raw)  # a melody without MIDI, the melody with MIDI, white noise without MIDI
    first = preprocess_flow(str(raw), str(out))
    assert first["rolls"] == {"midi": 1, "estimated": 1, "none": 1} and first["computed"] == 3
    assert len(first["without_roll"]) == 1 and "hiss.wav" in first["without_roll"][0]
    before = npy_state(out)
    again = preprocess_flow(str(raw), str(out))
    assert (again["cached"], again["computed"]) == (3, 0) and again["rolls"] == first["rolls"]
    assert npy_state(out) == before  # nothing estimated or written again
    off = preprocess_flow(str(raw), str(out), estimate_scores=False)
    assert off["rolls"] == {"midi": 1, "estimated": 0, "none": 2} and off["without_roll"] == []
    assert (off["cached"], off["computed"]) == (1, 2)  # the MIDI track's key does not name the estimator
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(str(t["roll_source"]) for t in manifest["tracks"]) == ["None", "None", "midi"]


def test_flow_resumes_after_kill(prefect_harness, tmp_path):
    """SIGKILL a slow flow run part-way, rerun: finished files come from the cache."""
    from prefect.settings import PREFECT_API_URL

    from flows.preprocess import preprocess_flow

    raw, out = good_corpus(tmp_path / "raw", 8), tmp_path / "out"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FLOW, str(raw), str(out), "1.5"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list((out / "tiers/16000").glob("*.npy"))) < 3:
            assert proc.poll() is None, "the flow ended before it could be killed"
            assert time.time() < deadline, "the flow never wrote 3 tracks"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
    before = npy_state(out)
    summary = preprocess_flow(str(raw), str(out))
    assert summary["tracks"] == 8 and summary["cached"] + summary["computed"] == 8
    assert summary["cached"] >= 2 and summary["computed"] >= 3  # resumed, not redone, not skipped
    after = npy_state(out)
    unchanged_tracks = {Path(p).stem for p, v in before.items() if after.get(p, (None,))[0] == v[0]}
    assert len(unchanged_tracks) == summary["cached"]  # exactly the cached files were not rewritten
    # the resumed dataset equals a clean run's
    clean = tmp_path / "clean"
    preprocess_flow(str(raw), str(clean))
    assert json.loads((out / "manifest.json").read_text()) == json.loads((clean / "manifest.json").read_text())
    assert {p: v[1] for p, v in after.items()} == {p: v[1] for p, v in npy_state(clean).items()}


def test_retries_only_io_errors(prefect_harness, tmp_path, monkeypatch):
    """OSError: retried (a flaky disk); still failing after retries: skipped as an I/O error.
    Bad input (a StrataError): tried once and skipped."""
    from flows.preprocess import preprocess_flow
    from pipeline.corpus import preprocess as pp
    from pipeline.corpus.audio import AudioError

    raw = good_corpus(tmp_path / "raw", 3)  # piece0 (folk), piece1 (chorale), piece2 (folk)
    calls: dict[str, int] = {}
    original = pp.preprocess_file

    def flaky(audio_path, *args, **kwargs):
        name = Path(audio_path).stem
        calls[name] = calls.get(name, 0) + 1
        if name == "piece0" and calls[name] == 1:
            raise OSError(5, "Input/output error")
        if name == "piece1":
            raise OSError(5, "Input/output error")
        if name == "piece2":
            raise AudioError(audio_path, "bad input")
        return original(audio_path, *args, **kwargs)

    monkeypatch.setattr(pp, "preprocess_file", flaky)
    summary = preprocess_flow(str(raw), str(tmp_path / "out"))
    assert calls == {"piece0": 2, "piece1": 3, "piece2": 1}
    assert summary["tracks"] == 1 and summary["skipped"] == 2
    report = json.loads((tmp_path / "out/report.json").read_text())
    reasons = {Path(s["path"]).stem: s["reason"] for s in report["skipped"]}
    assert reasons == {"piece1": "I/O error: Input/output error", "piece2": "bad input"}
