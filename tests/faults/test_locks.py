"""pipeline.lock: one writer per run or dataset folder, refused at once, never stuck after a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from pipeline.lock import FolderBusy, acquire, folder_lock, holder, release
from tests.faults.procs import ROOT, start, strata_env

HOLD = """
import sys, time
from pipeline.lock import acquire
acquire(sys.argv[1], sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


def hold(folder, what="strata train") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), what], cwd=ROOT, env=strata_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_refused_and_kill_9_frees(tmp_path):
    proc = hold(tmp_path / "run")
    try:
        info = holder(tmp_path / "run")
        assert info["pid"] == proc.pid and info["command"] == "strata train"
        with pytest.raises(FolderBusy, match=rf"in use by strata train \(pid {proc.pid}"):
            acquire(tmp_path / "run", "strata train")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert holder(tmp_path / "run") is None  # the kernel released it with the process
    with folder_lock(tmp_path / "run", "strata train"):
        pass


def test_reentrant_in_process_and_children(tmp_path):
    with folder_lock(tmp_path, "strata train"):
        with folder_lock(tmp_path, "strata train"):  # the flow inside the command
            pass
        # a child process (accelerate worker, training lane) inherits the holder's right
        code = subprocess.run([sys.executable, "-c", "import sys; from pipeline.lock import acquire; "
                               "acquire(sys.argv[1], 'x')", str(tmp_path)], cwd=ROOT, env=strata_env(),
                              capture_output=True, text=True)
        assert code.returncode == 0, code.stderr
        assert holder(tmp_path)["command"] == "strata train"
    assert holder(tmp_path) is None
    release(tmp_path)  # releasing a lock not held is harmless


@pytest.mark.parametrize("command", ["train", "preprocess"])
def test_cli_refuses_second_writer_at_once(tmp_path, command):
    """A second ``strata train`` / ``strata preprocess`` on a busy folder: exit 2, one line, in seconds."""
    from tests.helpers_data import make_dataset

    data = make_dataset(tmp_path / "data", "periodic", rates=(1000, 2000), seconds=1.0, roll="notes")
    raw = tmp_path / "raw"
    (raw / "folk").mkdir(parents=True)
    target = tmp_path / "run" if command == "train" else tmp_path / "busy"
    args = (["train", "--data", str(data), "--run", str(target)] if command == "train"
            else ["preprocess", "--raw", str(raw), "--out", str(target)])
    proc = hold(target, f"strata {command}")
    try:
        t0 = time.monotonic()
        second = start(args)
        out, err = second.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert second.returncode == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {target}: in use by strata {command} (pid {proc.pid}")
    assert took < 30  # before any Prefect server starts (measured ~3 s: imports)
