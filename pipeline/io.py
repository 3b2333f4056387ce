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
