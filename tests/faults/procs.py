"""Real processes for the fault tests: start a ``strata`` command, watch its process tree, signal it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.signals import descendants

ROOT = Path(__file__).resolve().parents[2]


def strata_env(**extra: str) -> dict[str, str]:
    """The environment of a ``strata`` subprocess: this checkout first, quiet Prefect, one thread."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               STRATA_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """``python -m flows.cli ARGS`` in a new session (the test can signal the command alone)."""
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env or strata_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


class Tree:
    """Every pid ever seen below ``proc`` (sampled while waiting): the children to count afterwards."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen = proc, set()

    def sample(self) -> list[int]:
        now = descendants(self.proc.pid)
        self.seen |= set(now)
        return now

    def wait_for(self, cond, timeout: float, what: str, step: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            self.sample()
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"the command ended before {what}: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(step)
        self.sample()

    def alive(self) -> list[int]:
        """Pids seen below the command that are still running (orphans once the command is gone)."""
        out = []
        for p in self.seen:
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[-1].split()[0] != b"Z":
                        out.append(p)
            except OSError:
                pass
        return out

    def reap(self) -> None:
        """Kill what is left (so a failing test leaks nothing)."""
        for p in self.alive():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def has_server(tree: Tree) -> bool:
    return any("uvicorn" in cmdline(p) for p in tree.sample())
