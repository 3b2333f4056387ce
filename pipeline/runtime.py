"""Runtime of the long commands: threads, one progress display, the package version.

- Threads: ``torch_threads`` (training and evaluation: all cores unless ``STRATA_TORCH_THREADS``),
  ``step_threads`` (generation: a streaming step is a few small matmuls, 1 thread by default),
  ``limited_threads`` (reference-counted ``torch.set_num_threads``), ``worker_threads`` (one torch
  and one BLAS thread per worker thread, for evaluation's pool).
- ``Progress``: one display for training, evaluation and generation: a rich bar per part with
  ETA on a terminal; otherwise lines on stderr (throttled updates, one line per finished part).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# ----------------------------------------------------------------------------- threads

_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_SAVED: int | None = None


def torch_threads() -> int:
    """All cores, unless ``STRATA_TORCH_THREADS`` says otherwise (e.g. 1 on a machine shared by
    several jobs, where OpenMP threads waiting for each other slow tiny models down badly)."""
    env = os.environ.get("STRATA_TORCH_THREADS", "").strip()
    return max(1, int(env)) if env.isdigit() else (os.cpu_count() or 1)


def step_threads() -> int:
    """Intra-op threads while stepping (``STRATA_GENERATE_THREADS``, default 1).

    A step is a few small matmuls: measured on 2 busy cores, 2 threads made a batch-8 step 10-500x
    slower than 1 thread (thread hand-off costs more than the work).
    """
    try:
        return max(1, int(os.environ.get("STRATA_GENERATE_THREADS", "1")))
    except ValueError:
        return 1


def generate_workers() -> int:
    """Groups of streams that the fused engine runs side by side on threads
    (``STRATA_GENERATE_WORKERS``, default: the machine's cores).  Each group is one core's work;
    a stream's samples do not depend on it (models/sampling.py)."""
    try:
        return max(1, int(os.environ.get("STRATA_GENERATE_WORKERS", str(os.cpu_count() or 1))))
    except ValueError:
        return 1


@contextmanager
def limited_threads(n: int):
    """Run with ``torch.set_num_threads(n)``; the old value comes back when the last user leaves
    (reference-counted, so concurrent generations in threads do not undo each other)."""
    # local: keeps torch out of `import pipeline.runtime` until this runs
    import torch

    global _THREADS_USERS, _THREADS_SAVED
    with _THREADS_LOCK:
        if _THREADS_USERS == 0:
            _THREADS_SAVED = torch.get_num_threads()
            torch.set_num_threads(n)
        _THREADS_USERS += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS -= 1
            if _THREADS_USERS == 0 and _THREADS_SAVED is not None:
                torch.set_num_threads(_THREADS_SAVED)


@contextmanager
def worker_threads():
    """One torch thread (intra-op threads over small tensors mostly wait on each other) and one
    BLAS thread for numpy (OpenBLAS's own threads spin against the workers: measured, a stage's
    linear baseline 3.9 s -> 0.5 s) while a pool of worker threads runs."""
    with limited_threads(1), _one_blas_thread():
        yield


def _one_blas_thread():
    """threadpoolctl comes with librosa (via scikit-learn); without it, nothing changes."""
    try:
        from threadpoolctl import threadpool_limits  # local: an ImportError guard (optional package)
    except ImportError:  # pragma: no cover - a dependency of scikit-learn, which librosa needs
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ----------------------------------------------------------------------------- package version


def package_version() -> str | None:
    """The installed ``strata`` version (None when not installed), read by the one helper that also
    stamps model.json (``models.checkpoint.package_version``, "0+unknown" when not installed)."""
    # local: keeps torch out of `import pipeline.runtime` until this runs
    from models.checkpoint import package_version as stamped

    v = stamped()
    return None if v == "0+unknown" else v


# ----------------------------------------------------------------------------- progress


@dataclass
class _Part:
    total: int
    done: int
    start: int  # ``done`` when the part was added (a resumed run)
    units: int  # units that finish the part (tracks, fits); 0: finished by ``finish``
    unit: str
    deadline_s: float | None  # the ETA never exceeds what is left of this budget
    t0: float
    last: float
    units_done: int = 0
    task: Any = None


class Progress:
    """Progress of one command, thread-safe: parts (a stage, the baselines) with a total each.

    On a terminal: a rich bar per part with elapsed time, ETA and an info text.  Otherwise, on
    stderr: ``label: done/total unit (p%), info, eta ...`` at most every ``every`` seconds per part
    (every update with ``every=0``), and ``label done (...), S s elapsed`` when a part finishes.
    """

    def __init__(self, enabled: bool = True, title: str | None = None, every: float = 2.0, prefix: str = ""):
        self.enabled, self.every, self.prefix = enabled, every, prefix
        self.parts: dict[str, _Part] = {}
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        self._bar = self._start_rich() if enabled and sys.stderr.isatty() else None
        if enabled and self._bar is None and title:
            _line(title)

    def add(self, label: str, total: int, *, units: int = 0, unit: str = "samples", start: int = 0,
            deadline_s: float | None = None) -> str:
        now = time.perf_counter()
        with self.lock:
            part = _Part(int(total), int(start), int(start), int(units), unit, deadline_s, now, now)
            if self._bar is not None:
                part.task = self._bar.add_task(label, total=max(part.total, 1), completed=part.done, info="")
            self.parts[label] = part
        return label

    def update(self, label: str, done: int | None = None, *, advance: int = 0, info: str = "") -> None:
        """Set (``done``) or advance the count of ``label``; ``info``: a short text (loss, speed)."""
        with self.lock:
            part = self.parts[label]
            part.done = part.done + advance if done is None else int(done)
            if self._bar is not None:
                self._bar.update(part.task, completed=part.done, info=info)
                return
            now = time.perf_counter()
            if self.enabled and now - part.last >= self.every:
                part.last = now
                _line(self._status(label, part, now, info))

    def unit_done(self, label: str, amount: int = 0) -> None:
        """One unit of ``label`` finished (a track; a baseline fit with ``amount`` = 1)."""
        with self.lock:
            part = self.parts[label]
            part.done += amount
            part.units_done += 1
            finished = part.units_done == part.units
        if self._bar is not None:
            self._bar.update(part.task, completed=part.done)
        elif finished:
            self.finish(label)

    def finish(self, label: str, done: int | None = None) -> None:
        """``label`` is complete: the bar shows ``done``, or one line with the elapsed time."""
        with self.lock:
            part = self.parts[label]
            if done is not None:
                part.done = int(done)
            if self._bar is not None:
                self._bar.update(part.task, completed=part.done)
            elif self.enabled:
                elapsed = time.perf_counter() - self.t0
                _line(f"{self.prefix}{label} done ({part.done:,} of {part.total:,} {part.unit}), "
                      f"{elapsed:.1f} s elapsed")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _status(self, label: str, part: _Part, now: float, info: str) -> str:
        speed = (part.done - part.start) / max(now - part.t0, 1e-9)
        eta = (part.total - part.done) / max(speed, 1e-9)
        if part.deadline_s is not None:
            eta = min(eta, max(0.0, part.deadline_s - (now - part.t0)))
        pct = 100 * part.done / max(part.total, 1)
        extra = f", {info}" if info else ""
        return f"{self.prefix}{label}: {part.done:,}/{part.total:,} {part.unit} ({pct:.0f}%){extra}, eta {_fmt_s(eta)}"

    @staticmethod
    def _start_rich():
        try:
            # local: an ImportError guard; rich only when a progress bar is shown
            from rich import progress as rp
            from rich.console import Console

            bar = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
                              rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn(),
                              rp.TextColumn("{task.fields[info]}"), console=Console(stderr=True))
            bar.start()
            return bar
        except Exception:  # noqa: BLE001 - another live display is active: fall back to lines
            return None


def _line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
