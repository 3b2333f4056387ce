"""SIGTERM and Ctrl-C on the commands: exit within seconds, one line saying what was kept, and no
process left behind (the process tree is counted while the command runs and after it ends).

Each test starts a real ``strata`` command with its own ephemeral Prefect server (~20 s here)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.config import save_config
from pipeline.lock import holder
from tests.faults.procs import Tree, has_server, start, strata_env
from tests.helpers_data import make_dataset, tiny_train_config
from tests.helpers_run import make_run

pytestmark = pytest.mark.slow  # real commands, each with its own Prefect server


def ephemeral_env(tmp_path) -> dict[str, str]:
    """No API URL: the command starts (and must stop) its own server."""
    env = strata_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    return env


def stop_and_check(proc, tree: Tree, how: str, limit: float = 15.0) -> str:
    """Send SIGTERM (``how="term"``) or a terminal's Ctrl-C (SIGINT to the group); the command must
    exit within ``limit`` seconds with one ``interrupted`` line and leave no process alive."""
    tree.sample()
    t0 = time.monotonic()
    if how == "term":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=limit + 30)
    finally:
        took = time.monotonic() - t0
        time.sleep(0.5)
        left = tree.alive()
        tree.reap()
    assert took < limit, f"took {took:.1f} s to exit"
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == (143 if how == "term" else 130), (proc.returncode, err[-2000:])
    assert not left, f"orphaned processes: {left} of {sorted(tree.seen)}"
    assert tree.seen, "no child process was seen (the test did not exercise the server)"
    return lines[0]


def test_train_sigterm_refuses_second_and_leaves_nothing(tmp_path):
    data = make_dataset(tmp_path / "data", "periodic", rates=(1000, 2000), seconds=1.0, roll="notes")
    cfg = tiny_train_config(max_steps=100000, eval_every=50, checkpoint_every=5, log_every=1)
    save_config(cfg, tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    proc = start(["train", "--data", str(data), "--run", str(run), "--config", str(tmp_path / "cfg.yaml")],
                 env=ephemeral_env(tmp_path))
    tree = Tree(proc)
    try:
        tree.wait_for(lambda: has_server(tree) and (run / "checkpoints/stage0").is_dir(), 180,
                      "training and the Prefect server")
        second = start(["train", "--data", str(data), "--run", str(run), "--config", str(tmp_path / "cfg.yaml")])
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and f"in use by strata train (pid {proc.pid}" in err, err
        line = stop_and_check(proc, tree, "term")
    finally:
        if proc.poll() is None:
            proc.kill()
        tree.reap()
    assert "--resume" in line
    assert holder(run) is None


def test_evaluate_sigterm_stops_its_server(tmp_path):
    """The leak seen by a user: SIGTERM on ``strata evaluate`` left the uvicorn server running."""
    data = make_dataset(tmp_path / "data", "periodic", rates=(1000, 2000), seconds=20.0, roll="notes")
    run = make_run(tmp_path, genres=["alpha", "beta"])
    proc = start(["evaluate", "--data", str(data), "--run", str(run), "--json", str(tmp_path / "e.json")],
                 env=ephemeral_env(tmp_path))
    tree = Tree(proc)
    try:
        tree.wait_for(lambda: has_server(tree), 180, "the Prefect server")
        time.sleep(1.0)
        stop_and_check(proc, tree, "term")
    finally:
        if proc.poll() is None:
            proc.kill()
        tree.reap()
    assert not (tmp_path / "e.json").exists() and not list(tmp_path.glob(".e.json.tmp*"))


def test_generate_ctrl_c_leaves_no_job_and_no_process(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "jobs"
    proc = start(["generate", "--run", str(run), "--out", str(out), "--seconds", "3", "--seed", "1"],
                 env=ephemeral_env(tmp_path))
    tree = Tree(proc)
    try:
        tree.wait_for(lambda: has_server(tree), 180, "the Prefect server")
        time.sleep(1.0)
        stop_and_check(proc, tree, "ctrl-c")
    finally:
        if proc.poll() is None:
            proc.kill()
        tree.reap()
    assert not [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else True
