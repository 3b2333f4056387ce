"""One writer per folder: an advisory ``flock`` on ``<folder>/.strata.lock``.

``strata train`` holds its run folder and ``strata preprocess`` its dataset folder for as long as
they run; a second command on the same folder is refused at once with one line naming the holder.
The kernel releases the lock when the holder's process ends in any way (``kill -9`` included), so a
killed holder never leaves it stuck; the file itself stays and is harmless.

The lock is re-entrant: in the process that holds it (the command line takes it, then the flow and
``train_stage`` take it again) and in its child processes (``accelerate launch`` workers, parallel
training lanes), which inherit ``STRATA_HELD_LOCKS`` from the holder.  Ranks other than 0 of a
launch started by hand do not take it (rank 0 does).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import StrataError

LOCK_FILE = ".strata.lock"
ENV = "STRATA_HELD_LOCKS"  # os.pathsep-separated lock files held by this process or an ancestor

_held: dict[str, tuple[int, int]] = {}  # lock file -> (fd, depth) held by this process


class FolderBusy(StrataError):
    """Another process holds the folder's lock."""


def lock_path(folder) -> Path:
    return Path(folder).resolve() / LOCK_FILE


def _inherited() -> set[str]:
    return {p for p in os.environ.get(ENV, "").split(os.pathsep) if p}


def _other_rank() -> bool:
    """A non-zero rank of a distributed launch (its rank 0 holds the lock)."""
    return os.environ.get("RANK", "0") not in ("", "0") or os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def holder(folder) -> dict | None:
    """What the holder wrote into the lock file ({"pid", "command", "since"}), None when free or unknown."""
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire(folder, what: str) -> None:
    """Take ``folder``'s lock for ``what`` (e.g. "strata train"), or raise FolderBusy at once."""
    path = lock_path(folder)
    key = str(path)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        return
    if key in _inherited() or _other_rank():
        _held[key] = (-1, 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
        except ValueError:
            info = {}
        os.close(fd)
        who = info.get("command") or "another strata command"
        pid = f" (pid {info['pid']}, since {info.get('since', '?')})" if info.get("pid") else ""
        raise FolderBusy(f"{Path(folder)}: in use by {who}{pid}; wait for it to finish or stop it "
                         f"(one writer per folder)") from None
    except BaseException:
        os.close(fd)
        raise
    info = {"pid": os.getpid(), "command": what, "argv": sys.argv[:8],
            "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _held[key] = (fd, 1)
    os.environ[ENV] = os.pathsep.join(sorted(_inherited() | {key}))


def release(folder) -> None:
    path = lock_path(folder)
    key = str(path)
    if key not in _held:
        return
    fd, depth = _held[key]
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    del _held[key]
    if fd >= 0:
        os.environ[ENV] = os.pathsep.join(sorted(_inherited() - {key}))
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def folder_lock(folder, what: str) -> Iterator[None]:
    """``with folder_lock(run_dir, "strata train"):`` one writer at a time (see the module doc)."""
    acquire(folder, what)
    try:
        yield
    finally:
        release(folder)


# ----------------------------------------------------------------------------- machine-wide slots

SLOTS_ENV = "STRATA_MAX_GENERATE_JOBS"  # optional machine-wide limit on concurrent generation jobs
SLOTS_DIR_ENV = "STRATA_SLOTS_DIR"  # where the slot files live (default: the user's cache folder)


def slots_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "strata" / "slots"
    return Path(os.environ.get(SLOTS_DIR_ENV) or default)


@contextmanager
def slot(name: str, limit: int | None, poll: float = 0.5, note=None, timeout: float | None = None) -> Iterator[int]:
    """Hold one of ``limit`` machine-wide slots called ``name`` (a lock-file semaphore: files
    ``<slots_dir>/<name>-<i>.lock``, each an ``flock`` the kernel frees when its holder dies);
    waits for a free one, calling ``note(message)`` once.  ``limit`` None or < 1: no limit (yields -1).
    A Prefect server's global concurrency limits do the same across machines (``strata serve``)."""
    if not limit or limit < 1:
        yield -1
        return
    folder = slots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline, told = None if timeout is None else time.monotonic() + timeout, False
    while True:
        for i in range(limit):
            fd = os.open(folder / f"{name}-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                yield i
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if deadline is not None and time.monotonic() > deadline:
            raise FolderBusy(f"all {limit} {name} slots are busy ({SLOTS_ENV}={limit}); try again later")
        if note and not told:
            note(f"waiting for one of {limit} {name} slots ({SLOTS_ENV}); other jobs hold them")
            told = True
        time.sleep(poll)


def generate_slots() -> int | None:
    """The machine-wide limit on generation jobs from ``STRATA_MAX_GENERATE_JOBS`` (None: no limit)."""
    text = os.environ.get(SLOTS_ENV, "").strip()
    if not text:
        return None
    try:
        return max(1, int(text))
    except ValueError:
        raise FolderBusy(f"{SLOTS_ENV}={text!r}: expected a whole number of jobs") from None


# ----------------------------------------------------------------------------- children of a holder


def pid_exists(pid: int, group: bool = False) -> bool:
    """A process (or, with ``group``, a process group) with this id exists: signal 0 reaches it, or
    it belongs to another user (a zombie still counts)."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_fds() -> tuple[int, ...]:
    """The lock files' descriptors this process holds: passed to a child (``pass_fds``), the child
    shares the lock, so the folder stays locked while any of them runs (no second writer even when the
    holder was killed and its child still runs)."""
    return tuple(fd for fd, _ in _held.values() if fd >= 0)


def die_with_parent(sig: int = 15) -> None:
    """Ask the kernel to send ``sig`` (SIGTERM) to this process when its parent dies (Linux
    ``PR_SET_PDEATHSIG``); a child of a ``kill -9``-ed command then stops instead of writing on as an
    orphan.  Usable as ``Popen(preexec_fn=die_with_parent)``; a no-op where not supported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request: act now
        os.kill(os.getpid(), sig)
