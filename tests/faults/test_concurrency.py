"""Concurrent writers: separate ``strata generate`` processes into one ``--out`` get distinct
folders, the optional machine-wide limit on generation jobs (a lock-file semaphore), and a
soak of `strata serve` on a real Strata server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline.lock import FolderBusy, slot
from tests.faults.procs import ROOT, strata_env

HOLD_SLOT = """
import sys, time
from pipeline.lock import slot
with slot("generate", int(sys.argv[1])) as i:
    print("slot", i, flush=True)
    time.sleep(120)
"""


def test_slots_limit_and_free_on_kill_9(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_SLOTS_DIR", str(tmp_path))
    env = strata_env(STRATA_SLOTS_DIR=str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().split() == ["slot", "0"]
        with pytest.raises(FolderBusy, match="all 1 generate slots are busy"):
            with slot("generate", 1, poll=0.05, timeout=0.3):
                pass
        with slot("generate", 2, poll=0.05, timeout=0.3) as i:  # a second slot is free
            assert i == 1
        got, notes = [], []

        def waiter():
            with slot("generate", 1, poll=0.05, note=notes.append, timeout=30) as i:
                got.append(i)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        assert not got and notes  # waiting, and said so once
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t.join(10)
    assert got == [0]  # the killed holder's slot came free


@pytest.mark.slow
def test_parallel_generate_into_one_out_gets_distinct_folders(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    from tests.faults.procs import start
    from tests.faults.scenarios import job_problems
    from tests.helpers_run import make_run

    run = make_run(tmp_path)
    out = tmp_path / "jobs"
    env = strata_env(PREFECT_API_URL=PREFECT_API_URL.value(), STRATA_SLOTS_DIR=str(tmp_path / "slots"),
                     STRATA_MAX_GENERATE_JOBS="2")
    procs = [start(["generate", "--run", str(run), "--out", str(out), "--seconds", "0.5", "--seed", "3",
                    "--count", "2"], env=env) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    jobs, problems = job_problems(out)
    assert not problems and len(jobs) == 6 and len({j.name for j in jobs}) == 6


@pytest.mark.slow
def test_serve_soak_runs_or_queues_every_scheduled_job(tmp_path):
    """`strata serve` on a real Strata server, a job every 3 s, --limit 2, 45 s: every due run is
    completed, queued by the limit, or cancelled by the stop; one complete folder per completed run;
    the serving process's memory flat; SIGTERM leaves nothing running."""
    from tests.faults.scenarios import serve_soak
    from tests.helpers_run import make_run

    r = serve_soak(tmp_path, make_run(tmp_path / "r"), "folk", seconds=45.0, interval=3.0, limit=2, piece=0.3)
    assert not r["problems"], r
    # 15 runs fall due in 45 s at most; serve's start (torch's import, the deployment's registration) takes 5-10 s
    # on a loaded 2-core machine, and 6 still fill the limit and queue more.  Each flow run is a process of its own
    # (imports, numba caches): over 30 s a clean-clone CI run here saw 7 due and none completed (2 in flight)
    assert r["states"].get("Completed", 0) >= 1 and r["due_runs"] >= 6
    assert r["job_folders"] == r["distinct_job_names"] >= r["states"]["Completed"]
    assert r["stop_line"] and "interrupted (SIGTERM)" in r["stop_line"]
