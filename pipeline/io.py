"""Atomic file writes (every file is written to a temporary name and renamed into place) and the
one check that an input file can be read."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def check_readable(path: Path, error: type[Exception]) -> None:
    """Raise ``error(path, reason)`` unless ``path`` is a readable, non-empty file."""
    if not path.exists():
        raise error(path, "file not found")
    if not path.is_file():
        raise error(path, "not a file")
    if not os.access(path, os.R_OK):
        raise error(path, "permission denied")
    if path.stat().st_size == 0:
        raise error(path, "empty file")


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    ``suffix`` keeps the extension for writers that look at it (soundfile, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name ends with the real suffix so format-sniffing writers work
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    kernel, the C library or the file system does not offer it."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_dirs(new: str | Path, final: str | Path, old: str | Path) -> None:
    """Put the complete folder ``new`` in place of ``final``; ``final`` is never missing or mixed.

    Where the kernel offers it the two folders are exchanged atomically and the old content (now at
    ``new``) deleted.  Elsewhere: ``final -> old``, ``new -> final``, delete ``old``; a kill between the
    renames leaves ``old`` complete, for the owner of the folder to put back.
    """
    import shutil

    new, final, old = Path(new), Path(final), Path(old)
    if final.exists() and _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)
        return
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def load_npy(path: str | Path) -> np.ndarray:
    """Load an array written by ``atomic_save_npy`` (never unpickles)."""
    return np.load(path, allow_pickle=False)
