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

from models.quant import quantize_stage, stage_weights
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
        "weights": stage_weights(stage),  # float32 | bf16 | int8 (models/quant.py); absent in older files: float32
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
    check_sizes(meta, folder / META)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
            shell = _build(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{folder / META}: cannot rebuild the stage ({e})") from None
    _check_shapes(shell, weights)
    stage = _build(meta)
    state = load_state_dict(weights, device="cpu")
    try:
        stage.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not match model.json ({e})") from None
    try:
        quantize_stage(stage, meta.get("weights", "float32"))
    except ValueError as e:
        raise CheckpointError(f"{folder / META}: {e}") from None
    return stage.to(device).eval()


def _build(meta: dict[str, Any]) -> Stage:
    return Stage(meta["config"], index=meta["index"], n_genres=meta["n_genres"], factor=meta["factor"],
                 roll_fps=meta["roll_fps"], classes=meta["classes"])


# bounds on the sizes a model.json may declare (far above any real stage; an absurd value is refused
# before a tensor is allocated or a million layers are built)
SIZE_LIMITS = {"residual_channels": 8192, "gate_channels": 16384, "skip_channels": 16384, "channels": 8192,
               "kernel_size": 64, "dilation_cycles": 64, "cycle_length": 24, "layers": 256, "mixtures": 1024,
               "linear_order": 65536, "linear_below": 65536, "order": 65536, "pool": 1 << 20, "lookahead": 1 << 20,
               "classes": 1 << 17, "n_genres": 1 << 16, "factor": 1 << 10, "roll_fps": 10000, "rate": 10**6}


def check_sizes(meta: dict[str, Any], where: Path) -> None:
    """Every integer size in ``model.json`` within ``SIZE_LIMITS`` (and not negative); one line naming the key."""
    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else str(k))
            return
        key = path.rsplit(".", 1)[-1]
        if key in SIZE_LIMITS and obj is not None:
            if isinstance(obj, bool) or not isinstance(obj, (int, float)) or obj != obj:
                raise CheckpointError(f"{where}: {path} = {obj!r} is not a number")
            if not 0 <= obj <= SIZE_LIMITS[key]:
                raise CheckpointError(f"{where}: {path} = {obj} is outside 0..{SIZE_LIMITS[key]} (refused before "
                                      f"allocating anything)")

    walk({k: meta.get(k) for k in ("classes", "n_genres", "factor", "roll_fps")}, "")
    walk(meta.get("config") or {}, "config")


def _check_shapes(shell: Stage, weights: Path) -> None:
    """The file's tensors (names and shapes, read from its header) are the ones model.json describes.

    They are loaded into the stage built on the ``meta`` device as empty ``meta`` tensors, so the
    stage's own migrations of older files (renamed keys, filled-in taps) apply and nothing is read
    or allocated."""
    import re

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{weights}: cannot read safetensors ({e})") from None
    fake = {k: torch.empty(shape, device="meta") for k, shape in have.items()}
    bad: list[str] = []
    try:
        result = shell.load_state_dict(fake, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as e:  # size mismatches (torch lists them one per line)
        found = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                           r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)", str(e))
        bad = [f"{k} ({a}) (model.json: ({b}))" for k, a, b in found] or [str(e).splitlines()[0][:200]]
        missing, unexpected = [], []
    if bad or missing or unexpected:
        parts = [f"shape of {', '.join(bad[:5])}" if bad else "",
                 f"missing {', '.join(sorted(missing)[:5])}" if missing else "",
                 f"unexpected {', '.join(sorted(unexpected)[:5])}" if unexpected else ""]
        more = sum(max(0, len(x) - 5) for x in (bad, missing, unexpected))
        raise CheckpointError(f"{weights}: tensors do not match model.json: {'; '.join(p for p in parts if p)}"
                              + (f" (and {more} more)" if more > 0 else ""))
