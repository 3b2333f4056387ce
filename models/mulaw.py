"""Mu-law codec, the one place its formula lives (numpy for data, torch for models).

Codes ``0 .. 2**bits - 1``; silence is ``2**(bits - 1)``.  Encoding matches
``librosa.mu_compress(quantize=True)``, decoding ``librosa.mu_expand`` (the bin's value).
``pipeline/corpus/audio.py`` re-exports these for the data side; the linear path and the baselines
read ``mulaw_values`` (the decoded value of every code).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def code_dtype(bits: int) -> type:
    """The numpy dtype of ``bits``-bit codes on disk (uint8 up to 8 bits, else uint16)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"mu-law bits must be in 1..16, got {bits}")
    return np.uint8 if bits <= 8 else np.uint16


def bits_of(classes: int) -> int:
    """Bits of a codebook of ``classes`` (a power of two) codes."""
    bits = int(classes).bit_length() - 1
    if classes != 2**bits:
        raise ValueError(f"mu-law classes must be a power of two, got {classes}")
    return bits


def mulaw_encode(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float audio in [-1, 1] (clipped) -> codes ``0 .. 2**bits - 1`` (silence = ``2**(bits-1)``)."""
    dtype = code_dtype(bits)
    mu = 2**bits - 1
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    x_comp = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)  # same formula as librosa
    bins = np.linspace(-1, 1, num=mu + 1, endpoint=True)
    return np.digitize(x_comp, bins, right=True).astype(dtype)


def mulaw_decode(codes: np.ndarray, bits: int = 8, dtype: Any = np.float32) -> np.ndarray:
    """Codes -> float audio (the bin's value, as ``librosa.mu_expand(quantize=True)``)."""
    code_dtype(bits)
    mu = 2**bits - 1
    y = (np.asarray(codes, dtype=np.float64) - 2 ** (bits - 1)) * 2.0 / (1 + mu)
    return (np.sign(y) / mu * (np.power(1.0 + mu, np.abs(y)) - 1.0)).astype(dtype)


def mulaw_encode_torch(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Torch twin of ``mulaw_encode``: float tensor -> int64 codes (computed in float64)."""
    code_dtype(bits)
    mu = 2**bits - 1
    x = x.to(torch.float64).clamp(-1.0, 1.0)
    x_comp = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    bins = torch.linspace(-1, 1, mu + 1, dtype=torch.float64, device=x.device)
    return torch.bucketize(x_comp, bins, right=False).to(torch.int64)


def mulaw_decode_torch(codes: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Torch twin of ``mulaw_decode``: integer codes -> float32 audio."""
    code_dtype(bits)
    mu = 2**bits - 1
    y = (codes.to(torch.float64) - 2 ** (bits - 1)) * 2.0 / (1 + mu)
    return (torch.sign(y) / mu * (torch.pow(1.0 + mu, y.abs()) - 1.0)).to(torch.float32)


def mulaw_values(classes: int) -> np.ndarray:
    """Decoded float value of every code (float64, (classes,)): the code -> value table."""
    return mulaw_decode(np.arange(classes), bits_of(classes), dtype=np.float64)


def decode_values(classes: int, end_class: bool = False) -> np.ndarray:
    """``mulaw_values`` plus 0.0 for the end code when present: float64 (classes [+1],)."""
    v = mulaw_values(classes)
    return np.concatenate([v, [0.0]]) if end_class else v
