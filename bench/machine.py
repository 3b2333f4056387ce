"""The machine a benchmark ran on, for the ``machine`` field of every ``bench/*.py --json`` file."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, torch threads, cores, versions and load: enough to read a benchmark's numbers."""
    # local: keeps torch out of `import machine` (every bench script imports it)
    import torch

    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def run_info(argv: list[str] | None = None) -> dict:
    """How the JSON was made: the command line (as ``make bench`` runs it) and the commit."""
    import subprocess
    import sys

    argv = list(sys.argv if argv is None else argv)
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    script = os.path.relpath(os.path.abspath(argv[0]), root) if argv else "?"
    return {"command": " ".join(["python", script, *argv[1:]]), "argv": argv[1:], "commit": commit}


def median(values) -> float:
    """The median of a non-empty sequence of numbers."""
    import statistics

    return float(statistics.median(values))
