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
    import torch

    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "load_average": [round(v, 2) for v in os.getloadavg()]}
