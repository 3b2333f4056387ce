"""Stage checkpoints: ``model.safetensors`` (tensors only) + ``model.json`` (how to rebuild).

Loading never unpickles: a pickle / ``torch.save`` file is refused with ``CheckpointError``.
Every file is written to a temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.wavenet import Stage

FORMAT = "strata-stage"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("strata")
    except Exception:
        return "0+unknown"


def _tmp_in(folder: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    return Path(name)


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors atomically (EMA weights, any state dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if torch.is_tensor(v)}
    tmp = _tmp_in(path.parent, ".safetensors")
    try:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file, naming pickles as such."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    looks_safetensors = len(head) >= 9 and head[8:9] == b"{"  # u64 header length, then the JSON header
    # a pickle starts with 0x80 (PROTO) and a torch.save zip with "PK"; a safetensors header length
    # can also start with 0x80 (e.g. 5248 bytes = 0x1480), so the safetensors layout is checked first
    if not looks_safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: a pickle / torch.save file, not safetensors; refusing to unpickle it")
    if not looks_safetensors:
        raise CheckpointError(f"{path}: not a safetensors file (bad header)")
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > path.stat().st_size:
        raise CheckpointError(f"{path}: truncated safetensors file")


def load_state_dict(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read safetensors ({e})") from None


def save_stage(stage: Stage, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """folder/model.safetensors + folder/model.json: everything needed to rebuild the stage."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "strata_version": package_version(),
        "index": stage.index,
        "factor": stage.factor,
        "roll_fps": stage.roll_fps,
        "classes": stage.classes,
        "n_genres": stage.n_genres,
        "genres": list(extra["genres"]) if "genres" in extra else None,
        "config": stage.config,
        "receptive_field": stage.receptive_field,
        "history_receptive_field": stage.history_receptive_field,
        "lookahead": stage.lookahead,
        "extra": extra,
    }
    save_state_dict(stage.state_dict(), folder / WEIGHTS, metadata={"format": FORMAT})
    tmp = _tmp_in(folder, ".json")
    try:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str))
        os.replace(tmp, folder / META)
    finally:
        tmp.unlink(missing_ok=True)
    return folder


def read_stage_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: missing (not a stage folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT or int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unknown format {meta.get('format')!r} "
                              f"version {meta.get('format_version')!r}")
    return meta


def load_stage(folder: str | Path, device: str = "cpu") -> Stage:
    """Rebuild a Stage from its folder alone (eval mode).  Never unpickles."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    weights = folder / WEIGHTS
    if not weights.exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{folder / pickles[0]}: a pickle-based checkpoint; refusing to unpickle it "
                                  f"(expected {WEIGHTS})")
        raise CheckpointError(f"{weights}: missing")
    _check_safetensors(weights)
    meta = read_stage_meta(folder)
    try:
        stage = Stage(meta["config"], index=meta["index"], n_genres=meta["n_genres"], factor=meta["factor"],
                      roll_fps=meta["roll_fps"], classes=meta["classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / META}: cannot rebuild the stage ({e})") from None
    state = load_state_dict(weights, device="cpu")
    try:
        stage.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not match model.json ({e})") from None
    return stage.to(device).eval()
