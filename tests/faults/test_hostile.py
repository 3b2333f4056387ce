"""Hostile input, bounded and seeded: mutated and odd MIDI and audio files, metadata.csv, configs,
checkpoints, and failing writes (disk full, unwritable folders).  Every case works or gives one clear
line; never a traceback, a hang or unbounded memory; nothing half-written, earlier results intact.

The default run is a short seeded subset; ``bench/faults.py`` runs the long one (>= 500 MIDI files)."""

from __future__ import annotations

import errno
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import ConfigError, load_config
from pipeline.errors import PreprocessError
from tests.faults.fuzz import run_worker


@pytest.mark.parametrize("kind,n", [("midi", 60), ("audio", 40)])
def test_fuzz_subset_has_no_defects(kind, n):
    result = run_worker(kind, n, seed=0, per_case=10.0, mem_mb=3072, timeout=300)
    assert result["cases"] >= n and not result["defects"], result["defects"]
    assert result["counts"].get("clear", 0) > 0 and result["counts"].get("ok", 0) > 0  # both paths exercised


# ----------------------------------------------------------------------------- audio


def test_long_audio_memory_is_bounded(tmp_path):
    """A 40-minute file with a 60 s crop decodes at most 60 + LEAD_SECONDS: peak memory stated."""
    from pipeline.corpus.audio import LEAD_SECONDS, prepare_audio

    rate, minutes = 8000, 40
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
        block = (0.3 * np.sin(np.arange(rate * 60) * 2 * np.pi * 220 / rate)).astype(np.float32)
        for _ in range(minutes):
            f.write(block)
    tracemalloc.start()
    y, info = prepare_audio(path, 8000, max_seconds=60.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info["cropped"] and info["source_seconds"] == pytest.approx(minutes * 60) and len(y) == 60 * rate
    decoded = (60 + LEAD_SECONDS) * rate * 4  # float32 of the window read
    assert peak < 8 * decoded < minutes * 60 * rate * 4, peak  # a few copies of the window, never the whole file


def test_file_changed_while_read_is_refused(tmp_path, monkeypatch):
    import pipeline.corpus.preprocess as pp
    from tests.pipeline.test_preprocess import tone, write_wav

    path = write_wav(tmp_path / "raw/folk/a.wav", tone(3.0, 16000, 220))
    original = pp._prepare

    def grows(p, d, keep_start):
        out = original(p, d, keep_start)
        with open(p, "ab") as f:  # another program appends while we decode
            f.write(b"\0" * 64)
        return out

    monkeypatch.setattr(pp, "_prepare", grows)
    with pytest.raises(PreprocessError, match="changed while it was being read"):
        pp.preprocess_file(path, "folk", None, tmp_path / "out", load_config("tiny").data)
    assert not list((tmp_path / "out").rglob("*.npy"))


# ----------------------------------------------------------------------------- metadata.csv


def _csv_corpus(tmp_path: Path, rows: list[str], header: str = "path,genre,midi") -> Path:
    from tests.pipeline.test_preprocess import tone, write_wav

    raw = tmp_path / "raw"
    write_wav(raw / "a.wav", tone(2.5, 16000, 220))
    write_wav(tmp_path / "outside.wav", tone(2.5, 16000, 330))
    (raw / "metadata.csv").write_text("\n".join([header, *rows]) + "\n")
    return raw


def test_metadata_outside_paths_duplicates_and_genre_names(tmp_path, monkeypatch):
    from pipeline.corpus.inputs import discover
    from pipeline.corpus.manifest import write_dataset
    from pipeline.corpus.preprocess import process_all

    outside = tmp_path / "outside.wav"
    raw = _csv_corpus(tmp_path, ["a.wav,folk,", f"{outside},folk,", "../outside.wav,folk,", "a.wav,folk,",
                                 "a.wav,../../evil,", "a.wav,a/b\\c,", "a.wav,folk,../outside.mid"])
    inputs, skipped = discover(raw)
    reasons = [s["reason"] for s in skipped]
    assert sum("outside the raw folder" in r for r in reasons) == 3, reasons
    assert sum("duplicate of line 2" in r for r in reasons) == 1, reasons
    assert [(a.name, g) for a, g, _ in inputs] == [("a.wav", "../../evil"), ("a.wav", "a/b\\c"), ("a.wav", "folk")]
    out = tmp_path / "ds" / "out"
    tracks, bad = process_all(inputs, out, load_config("tiny").data)
    write_dataset(out, tracks, skipped + bad, load_config("tiny").data)
    assert len(tracks) == 3 and not bad
    written = [p for p in tmp_path.rglob("*") if p.is_file() and tmp_path / "ds" in p.parents]
    assert written and all(out in p.parents for p in written)  # nothing outside the output folder
    # explicitly allowed
    monkeypatch.setenv("STRATA_ALLOW_OUTSIDE_RAW", "1")
    inputs, skipped = discover(raw)
    assert len(inputs) == 4  # the outside file now counts; ../outside.wav repeats it (duplicate)


@pytest.mark.parametrize("content,expect", [
    (b"file,label\na.wav,folk\n", "no column genre, path"),
    (b"path,genre\n\xff\xfe\x00bad,folk\n", "cannot read metadata.csv"),
])
def test_metadata_bad_files_are_one_line(tmp_path, content, expect):
    from pipeline.corpus.inputs import discover

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "metadata.csv").write_bytes(content)
    with pytest.raises(PreprocessError, match=expect) as e:
        discover(raw)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("yaml_text,key", [
    ("train: {lr: fast}", "train.lr"),
    ("train: {lrr: 0.1}", "lrr"),
    ("stages: [{residual_channels: x}]", "stages[0].residual_channels"),
    ("data: {rates: [2000, x]}", "data.rates[1]"),
    ("data: {roll_fps: null}", "data.roll_fps"),
    ("stages: [5]", "stages[0]"),
    ("stages: [{history: {enabled: maybe}}]", "stages[0].history.enabled"),
    ("train: {betas: [0.9]}", "train.betas"),
    ("generate: {seconds: [1]}", "generate.seconds"),
    ("bogus: 1", "bogus"),
    ("data: [1, 2]", "data"),
    ("train: {seed: 1.5}", "train.seed"),
    ("stages: [{}, {linear_input_noise: -1}]", "stages[1].linear_input_noise"),
    ("stages: [{}, {train_input_noise: 11}]", "stages[1].train_input_noise"),
    ("stages: [{}, {weights: fp8}]", "stages[1].weights"),
    ("stages: [{weights: 8}]", "stages[0].weights"),
    ("stages: [{opening_share: 1}]", "stages[0].opening_share"),
    ("stages: [{}, {opening_share: -0.1}]", "stages[1].opening_share"),
    ("stages: [{entry_share: 1}]", "stages[0].entry_share"),
])
def test_config_errors_name_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert key in text and "\n" not in text, text


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def stage_folder(tmp_path_factory) -> Path:
    from tests.helpers_run import make_run

    return make_run(tmp_path_factory.mktemp("ck")) / "stages" / "0"


def _edited(stage_folder: Path, tmp_path: Path, **config) -> Path:
    folder = tmp_path / "stage"
    shutil.copytree(stage_folder, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["config"].update(config)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


PEAK_LIMIT_KB = 100_000  # growth of a fresh process's peak resident memory that counts as "allocated"
PEAK_SCRIPT = """
import json, sys
from models import load_stage
from models.checkpoint import CheckpointError


def kb(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) restarts from the resident memory now (Linux >= 4.0)
before = kb("VmHWM")
try:
    load_stage(sys.argv[1])
    error = None
except CheckpointError as e:
    error = str(e)
print(json.dumps({"grew_kb": kb("VmHWM") - before, "error": error}))
"""


def _load_in_fresh_process(folder: Path) -> dict:
    """``load_stage(folder)`` in a new process: how far its peak resident memory rose above the memory held
    before the call (KB), and the error.  The peak is reset just before the call, so neither the imports
    nor anything this test process did before counts."""
    import subprocess
    import sys

    from tests.faults.procs import ROOT, strata_env

    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder)], cwd=ROOT, env=strata_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("key,value", [("residual_channels", 10**9), ("cycle_length", 10**6),
                                       ("dilation_cycles", -1), ("skip_channels", "wide")])
def test_absurd_model_json_refused_before_allocation(stage_folder, tmp_path, key, value):
    found = _load_in_fresh_process(_edited(stage_folder, tmp_path, **{key: value}))
    assert found["error"] and f"config.{key}" in found["error"] and "\n" not in found["error"], found
    assert found["grew_kb"] < PEAK_LIMIT_KB, found  # nothing big allocated (10**9 channels would be gigabytes)


def test_peak_memory_check_sees_a_real_load(stage_folder, tmp_path):
    """The measure above can see an allocation: a valid stage with wide layers raises the peak."""
    found = _load_in_fresh_process(_edited(stage_folder, tmp_path, residual_channels=9))
    assert found["error"] and "do not match model.json" in found["error"]  # control: refused, after the shell
    from models import Stage, save_stage

    wide = Stage({"residual_channels": 1024, "gate_channels": 1024, "skip_channels": 1024, "cycle_length": 4,
                  "dilation_cycles": 1, "use_genre": False, "linear_order": 0}, index=0, n_genres=1, classes=256)
    save_stage(wide, tmp_path / "wide")
    weights_kb = sum(p.numel() for p in wide.parameters()) * 4 // 1024  # float32
    assert weights_kb > PEAK_LIMIT_KB
    found = _load_in_fresh_process(tmp_path / "wide")
    assert found["error"] is None and found["grew_kb"] > PEAK_LIMIT_KB, (found, weights_kb)


def test_tensors_disagreeing_with_model_json_are_named(stage_folder, tmp_path):
    from models import load_stage
    from models.checkpoint import CheckpointError

    folder = _edited(stage_folder, tmp_path, residual_channels=9)
    with pytest.raises(CheckpointError, match=r"tensors do not match model.json: shape of \S+\.weight") as e:
        load_stage(folder)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- failing writes


def _fail_writes_after(monkeypatch, module, name: str, allowed: int) -> None:
    """``module.name`` raises ENOSPC (disk full) after ``allowed`` calls."""
    original, calls = getattr(module, name), {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > allowed:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_disk_full_during_generation_keeps_earlier_jobs(tmp_path, monkeypatch):
    import pipeline.generation.jobs as jobs
    from pipeline.generation.generate import generate
    from tests.helpers_run import make_run

    run = make_run(tmp_path)
    out = tmp_path / "jobs"
    (first,) = generate(run, out, seconds=0.2, seed=1, progress=False)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    _fail_writes_after(monkeypatch, jobs, "write_wav", 3)  # the second variation's first file fails
    with pytest.raises(OSError, match="No space left"):
        generate(run, out, seconds=0.2, seed=2, count=2, progress=False)
    assert [p.name for p in out.iterdir()] == [first.name]  # no partial job, no temporary folder
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before


def test_disk_full_during_preprocess_skips_and_keeps(tmp_path, monkeypatch):
    import pipeline.corpus.preprocess as pp
    from tests.pipeline.test_preprocess import tone, write_wav

    cfg = load_config("tiny").data
    out = tmp_path / "out"
    a = pp.preprocess_file(write_wav(tmp_path / "raw/folk/a.wav", tone(2.5, 16000, 220)), "folk", None, out, cfg)
    kept = {p: p.read_bytes() for p in out.rglob("*.npy")}
    _fail_writes_after(monkeypatch, pp, "atomic_save_npy", 1)  # the second tier of b fails
    with pytest.raises(OSError):
        pp.preprocess_file(write_wav(tmp_path / "raw/folk/b.wav", tone(2.5, 16000, 330)), "folk", None, out, cfg)
    assert {p: p.read_bytes() for p in out.rglob("*.npy")} == kept  # b's first tier removed, a intact
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    assert a["id"]


def test_failing_json_write_keeps_the_old_file(tmp_path, monkeypatch):
    import pipeline.io as io

    target = tmp_path / "eval.json"
    io.atomic_write_json(target, {"old": 1})

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError):
        io.atomic_write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_cli_unwritable_output_is_one_line(tmp_path):
    """``strata generate --out`` under a path that is a file (unwritable as a folder, also for root)."""
    from tests.faults.procs import start
    from tests.helpers_run import make_run

    run = make_run(tmp_path)
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = start(["generate", "--run", str(run), "--out", str(tmp_path / "blocker" / "jobs"), "--seconds", "0.2"])
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert str(tmp_path / "blocker") in lines[0], lines[0]  # names the input
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"  # nothing written over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "run"]  # and nothing beside it
