"""``kill -9`` of the real ``strata`` processes at seeded random moments: nothing that looks complete
but is not, an exact ``--resume``, the same audio for the same seed.

The commands use the session's Prefect test server (``PREFECT_API_URL``), so they start in seconds;
``tests/faults/test_signals.py`` covers the commands' own ephemeral servers."""

from __future__ import annotations

import json
import random
import signal
import time

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file

from pipeline.config import save_config
from pipeline.run import list_checkpoints, read_metrics
from tests.faults.procs import start, strata_env
from tests.helpers_data import make_dataset, tiny_train_config
from tests.helpers_run import make_run

pytestmark = pytest.mark.slow  # real commands killed part-way

JOB_FILES = {"audio.wav", "tier_1000.wav", "tier_2000.wav", "spectrogram.png", "meta.json"}


@pytest.fixture()
def api_env(prefect_harness) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return strata_env(PREFECT_API_URL=PREFECT_API_URL.value())


def run_to_end(args, env, timeout=300) -> str:
    proc = start(args, env=env)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def kill_when(args, env, cond, timeout=240, after: float = 0.0):
    """Start the command, wait until ``cond()`` (then ``after`` seconds more), ``kill -9`` it."""
    proc = start(args, env=env)
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            if proc.poll() is not None:
                return proc.returncode  # finished before the moment came: still a valid case
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.02)
        time.sleep(after)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return proc.returncode


def complete_jobs(out):
    """Job folders a reader sees; each must be complete and readable."""
    jobs = sorted(p for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
    for job in jobs:
        assert {p.name for p in job.iterdir()} == JOB_FILES, job
        json.loads((job / "meta.json").read_text())
        sf.read(str(job / "audio.wav"))
    return jobs


def test_generate_kill_9_then_same_seed(api_env, tmp_path):
    run = make_run(tmp_path)
    args = ["generate", "--run", str(run), "--seconds", "2", "--seed", "5", "--count", "2"]
    ref = tmp_path / "ref"
    run_to_end(args + ["--out", str(ref)], api_env)
    [r0, r1] = complete_jobs(ref)
    rng = random.Random(12)
    out = tmp_path / "jobs"
    for _ in range(3):
        kill_when(args + ["--out", str(out)], api_env, lambda: out.exists() and any(out.iterdir()),
                  after=rng.uniform(0.0, 1.5))
        complete_jobs(out)
    run_to_end(args + ["--out", str(out)], api_env)
    jobs = complete_jobs(out)
    assert not list(out.glob(".tmp-*")), "unfinished folders of killed writers are swept"
    fresh = [j for j in jobs if json.loads((j / "meta.json").read_text())["variation"] in (0, 1)][-2:]
    for a, b in zip(sorted(fresh, key=lambda j: j.name[-2:]), (r0, r1)):
        assert np.array_equal(sf.read(str(a / "audio.wav"))[0], sf.read(str(b / "audio.wav"))[0])


def test_evaluate_kill_9_never_partial_json(api_env, tmp_path):
    data = make_dataset(tmp_path / "data", "periodic", rates=(1000, 2000), seconds=3.0, roll="notes")
    run = make_run(tmp_path, genres=["alpha", "beta"])
    target = tmp_path / "eval.json"
    args = ["evaluate", "--data", str(data), "--run", str(run), "--json", str(target)]
    rng = random.Random(7)
    started = time.monotonic()
    run_to_end(args, api_env)
    full = time.monotonic() - started
    good = json.loads(target.read_text())
    good.pop("timings", None)
    target.unlink()
    for _ in range(3):
        kill_when(args, api_env, lambda: True, after=rng.uniform(0.5, full))
        if target.exists():  # the kill came after the rename: the whole evaluation
            got = json.loads(target.read_text())
            got.pop("timings", None)
            assert got == good
            target.unlink()
        assert not list(tmp_path.glob(".eval.json.tmp*"))  # a temporary name at most, never the real one


def test_train_kill_9_then_resume_is_exact(api_env, tmp_path):
    data = make_dataset(tmp_path / "data", "periodic", rates=(1000, 2000), seconds=2.0, roll="notes")
    every = 4
    cfg = tiny_train_config(max_steps=40, eval_every=8, checkpoint_every=every, log_every=1, keep_checkpoints=2)
    save_config(cfg, tmp_path / "cfg.yaml")
    base = ["train", "--data", str(data), "--config", str(tmp_path / "cfg.yaml"), "--stages", "0",
            "--max-steps", "30"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_to_end(base + ["--run", str(ref)], api_env)
    step = random.Random(3).randint(9, 22)

    def reached() -> bool:
        try:
            return any(r.get("step", 0) >= step for r in read_metrics(killed, 0))
        except (OSError, ValueError):  # a row being written
            return False

    code = kill_when(base + ["--run", str(killed)], api_env, reached)
    assert code == -signal.SIGKILL
    ckpts = [s for s, _ in list_checkpoints(killed, 0)]
    assert ckpts and step - ckpts[-1] <= every, (step, ckpts)  # at most checkpoint_every steps lost
    from models import load_stage

    load_stage(killed / "stages/0")  # the export is whole and loads
    run_to_end(base + ["--run", str(killed), "--resume"], api_env)
    for name in ("checkpoints/stage0/step-30/model.safetensors", "stages/0/model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(killed / name))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), name
