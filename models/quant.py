"""Weights in int8, int4 and bf16: the formats a stage's per-sample matrices can be sampled with.

A stage's ``weights`` (``float32`` | ``bf16`` | ``int8`` | ``int4``, model.json and the run config's
``stages[k].weights``) says which values its per-sample matrices hold: the dilated convolutions,
the residual and skip projections, the two output layers and the linear path's output rows
(``QUANTIZED``; the embedding, biases, conditioning and history projections stay float32).

- int8: symmetric, one float32 scale per output channel: w ~ scale[o] * q[i, o], q in [-127, 127],
  scale[o] = max_i |w[i, o]| / 127 (an all-zero channel: scale 1, q 0).  Error per weight <= scale / 2.
- int4: the same with 15 levels: scale[o] = max_i |w[i, o]| / 7, q in [-7, 7]; two inputs to a byte, read as a
  signed int8: byte [j, o] = q[2j, o] + 16 q[2j + 1, o] (in [-119, 119]; an odd input count gets a zero row), so
  q[2j + 1] = floor(byte / 16 + 1/2) and q[2j] = byte - 16 q[2j + 1], in float arithmetic, and a kernel's loop
  over the output channels reads a byte per two products.  Stored as uint8 (the same bits): the dtype tells the
  fused kernel the format.  Error per weight <= scale / 2.
- bf16: the high 16 bits of the float32 (round to nearest, ties to even): 7 stored mantissa bits,
  relative error <= 2^-8.

Packed matrices are (I, O) (``models/fused.py`` ``pack``, the kernel's layout: a row per input, a
column per output channel, the output contiguous), so a channel is a column.  PyTorch's Conv1d
weights are (O, I, k): a channel is a row; ``quantize_stage`` groups them so, hence the reference
(the stage's own modules, fake-quantized in place) and the fused kernel (which quantizes the packed
matrices again: the values are already on the grid, so it finds the same integers) run the same weights.
"""

from __future__ import annotations

import numpy as np
import torch

WEIGHT_FORMATS = ("float32", "bf16", "int8", "int4")
QUANTIZED = ("convs", "res", "skip", "out1", "out2", "lin_out")  # the stage's per-sample modules
INT8_MAX = 127
INT4_MAX = 7


def check_format(fmt: str, key: str = "weights") -> str:
    """``fmt`` if it is a weight format, else a ValueError naming ``key`` and the allowed values."""
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"{key}: {fmt!r} not one of {' | '.join(WEIGHT_FORMATS)}")
    return fmt


# ----------------------------------------------------------------------------- numpy: packed (..., I, O)


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w (..., I, O) float32 -> (q (..., I, O) int8, scale (..., O) float32), per output channel."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=-2)  # (..., O)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None, :]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return np.ascontiguousarray(q), np.ascontiguousarray(scale)


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(q (..., I, O) int8, scale (..., O)) -> the float32 values they stand for (..., I, O)."""
    return q.astype(np.float32) * scale[..., None, :]


def quantize_int4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w (..., I, O) float32 -> (bytes (..., ceil(I/2), O) uint8, scale (..., O) float32), per output channel:
    byte [j, o], as a signed int8, = q[2j, o] + 16 q[2j + 1, o]."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=-2)  # (..., O)
    scale = np.where(amax > 0, amax / np.float32(INT4_MAX), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None, :]), -INT4_MAX, INT4_MAX).astype(np.int16)
    if q.shape[-2] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-2] + (1, q.shape[-1]), np.int16)], axis=-2)
    packed = (q[..., 0::2, :] + 16 * q[..., 1::2, :]).astype(np.int8).view(np.uint8)
    return np.ascontiguousarray(packed), np.ascontiguousarray(scale)


def int4_pairs(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int4 bytes (uint8) -> (q[2j], q[2j + 1]) as float32: the kernel's arithmetic (``fused_kernel._nibbles``)."""
    f = packed.view(np.int8).astype(np.float32)
    hi = np.floor(f * np.float32(0.0625) + np.float32(0.5))
    return f - np.float32(16.0) * hi, hi


def dequantize_int4(packed: np.ndarray, scale: np.ndarray, n_in: int | None = None) -> np.ndarray:
    """(bytes (..., ceil(I/2), O) uint8, scale (..., O)) -> the float32 values they stand for (..., I, O)
    (``n_in``: I, default twice the byte rows)."""
    lo, hi = int4_pairs(packed)
    w = np.stack([lo, hi], axis=-2).reshape(packed.shape[:-2] + (2 * packed.shape[-2], packed.shape[-1]))
    return w[..., :n_in if n_in is not None else w.shape[-2], :] * scale[..., None, :]


def to_bf16(w: np.ndarray) -> np.ndarray:
    """float32 (any shape) -> uint16 high halves, rounded to nearest even (finite values)."""
    bits = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def from_bf16(h: np.ndarray) -> np.ndarray:
    """uint16 high halves -> float32 (exact)."""
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def fake_quant(w: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 values a packed matrix (..., I, O) holds in format ``fmt``."""
    check_format(fmt)
    w = np.asarray(w, np.float32)
    if fmt == "int8":
        return dequantize_int8(*quantize_int8(w))
    if fmt == "int4":
        return dequantize_int4(*quantize_int4(w), n_in=w.shape[-2])
    if fmt == "bf16":
        return from_bf16(to_bf16(w))
    return w


def packed_bytes(fmt: str, shape: tuple[int, ...]) -> int:
    """Bytes a matrix (..., I, O) takes in format ``fmt`` (int8, int4: with their float32 scales)."""
    n = int(np.prod(shape))
    if fmt == "int8":
        return n + 4 * n // shape[-2]
    if fmt == "int4":  # ceil(I / 2) byte rows
        return n // shape[-2] * ((shape[-2] + 1) // 2 + 4)
    return n * (2 if fmt == "bf16" else 4)


# ----------------------------------------------------------------------------- torch: a stage in place


def _fake_quant_channels(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """A Conv1d weight (O, I, k): each output channel (a row) quantized -> float32 (O, I, k)."""
    cols = w.detach().to(torch.float32).reshape(w.shape[0], -1).t().contiguous().numpy()  # (I*k, O)
    return torch.from_numpy(np.ascontiguousarray(fake_quant(cols, fmt).T)).reshape(w.shape).to(w.dtype)


@torch.no_grad()
def quantize_stage(stage, fmt: str):
    """Replace ``stage``'s per-sample weights (``QUANTIZED``) by the values format ``fmt`` holds, in
    place, and record it (``stage.weights``).  ``float32`` changes nothing (a quantized stage stays
    so: the dropped bits are gone).  Returns the stage."""
    check_format(fmt)
    if fmt == "float32":
        stage.weights = getattr(stage, "weights", "float32")
        return stage
    for name in QUANTIZED:
        module = getattr(stage, name, None)
        if module is None:
            continue
        for m in module.modules():
            if isinstance(m, torch.nn.Conv1d):
                m.weight.copy_(_fake_quant_channels(m.weight, fmt))
    stage.weights = fmt
    return stage


def stage_weights(stage) -> str:
    """The format ``stage`` is sampled with (``float32`` unless ``quantize_stage`` said otherwise)."""
    return getattr(stage, "weights", "float32")
