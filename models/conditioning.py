"""What a stage is conditioned on, as one object (``Conditioning``), and the registered sources
that turn its local signals into features of the conditioning stack (``SOURCES``).

``Stage.forward(x, cond)`` and ``Stage.streaming(batch, cond, chunk)`` take a ``Conditioning``;
``None`` fields mean "not given" (the learned "dropped" state, "no genre").  Per-row drop flags
are how conditioning dropout, the evaluation's ablations and classifier-free guidance remove a
signal (never zeros that would read as silence).

A local signal is a field here plus a ``Source`` (a module with its own "dropped" vector) that
``ConditioningStack`` loops over, in registration order; see docs/ARCHITECTURE.md "How to add".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.roll import ROLL_CHANNELS


def _rows(v: Any, idx: torch.Tensor) -> Any:
    """Rows ``idx`` of a per-row value; scalars (an int genre, a 0-d mask) stay as they are."""
    if v is None or not torch.is_tensor(v) or v.dim() == 0:
        return v
    return v[idx.to(v.device)]


@dataclass(frozen=True)
class Conditioning:
    """Everything a stage reads besides its own past.  B = batch rows.

    genre: int64 (B,) or an int (None or ``n_genres``: "no genre");
    below: int64 (B, T // factor) codes of the tier below, aligned; roll: float (B, 256, F);
    drop_below / drop_roll / drop_history: bool (B,) per-row dropout of that input (network and
    linear path alike); drop_below_linear: bool (B,) the linear path's own flag (None: drop_below);
    cond_len: int (B,) stage samples of below / roll that exist (the rest is past the piece's end).
    """

    genre: Any = None
    below: torch.Tensor | None = None
    roll: torch.Tensor | None = None
    drop_below: torch.Tensor | None = None
    drop_roll: torch.Tensor | None = None
    drop_history: torch.Tensor | None = None
    drop_below_linear: torch.Tensor | None = None
    cond_len: torch.Tensor | None = None

    @classmethod
    def of(cls, cond: Conditioning | None = None, **fields: Any) -> Conditioning:
        """``cond`` (or an empty one) with ``fields`` set."""
        base = cond if cond is not None else cls()
        return dataclasses.replace(base, **fields) if fields else base

    def replace(self, **fields: Any) -> Conditioning:
        return dataclasses.replace(self, **fields)

    @property
    def drop_linear(self) -> torch.Tensor | None:
        """The linear path's tier-below drop flags."""
        return self.drop_below if self.drop_below_linear is None else self.drop_below_linear

    def rows(self, idx: torch.Tensor) -> Conditioning:
        """The rows ``idx`` (B',) of every per-row field."""
        return Conditioning(**{f.name: _rows(getattr(self, f.name), idx) for f in dataclasses.fields(self)})

    def window(self, a: int, b: int, factor: int = 1, rate: int | None = None,
               roll_fps: int | None = None) -> Conditioning:
        """Local signals for stage samples [a, b): below[a // factor : b // factor] and roll frames
        [a * roll_fps // rate, b * roll_fps // rate)."""
        below = None if self.below is None else self.below[:, a // factor: b // factor]
        roll = self.roll
        if roll is not None:
            roll = roll[:, :, a * roll_fps // rate: b * roll_fps // rate]
        return self.replace(below=below, roll=roll)

    def twin(self, no_genre: int, keep_roll: bool = False) -> Conditioning:
        """Rows doubled for classifier-free guidance: rows [B:] are the unconditional twins ("no
        genre", roll dropped unless ``keep_roll``; the tier below, the stage's input, kept).  ``genre``
        must be (B,)."""
        genre = torch.as_tensor(self.genre)
        b = genre.shape[0]

        def two(v):
            return None if v is None else torch.cat([v, v])

        drop_roll = None
        if self.roll is not None:
            drop_roll = (torch.arange(2 * b) >= b) & (not keep_roll)
            if self.drop_roll is not None:
                drop_roll = drop_roll | two(torch.as_tensor(self.drop_roll).expand(b))
        return Conditioning(genre=torch.cat([genre, torch.full_like(genre, no_genre)]), below=two(self.below),
                            roll=two(self.roll), drop_below=two(self.drop_below), drop_roll=drop_roll,
                            drop_history=two(self.drop_history), drop_below_linear=two(self.drop_below_linear),
                            cond_len=two(self.cond_len))

    def to(self, device: Any) -> Conditioning:
        """Every tensor field on ``device``."""
        return Conditioning(**{f.name: v.to(device) if torch.is_tensor(v) else v
                               for f in dataclasses.fields(self) for v in [getattr(self, f.name)]})


# ----------------------------------------------------------------------------- sources


class Source(nn.Module):
    """One local signal of the conditioning stack, read from the ``Conditioning`` field ``name``
    (per-row drop flags: the field ``drop_<name>``): its features for conditioning samples ``idx``
    (``features``), a learned ``dropped`` vector for missing, dropped and past-the-end samples
    (``put``).  A subclass defines ``name``, ``flag`` and ``first_stage`` (or ``wanted``), ``build``
    (its layers, created before ``dropped``), ``features`` and ``macs``; ``add`` may be overridden."""

    name = ""
    flag = ""  # the StageArchConfig field that turns the source on
    first_stage = 0  # the coarsest stage that may read it

    def __init__(self, classes: int, channels: int) -> None:
        super().__init__()
        self.build(classes, channels)
        self.dropped = nn.Parameter(0.1 * torch.randn(channels))

    @classmethod
    def wanted(cls, arch: Any, index: int) -> bool:
        """Whether stage ``index`` with architecture ``arch`` (``StageArchConfig``) reads this signal."""
        return index >= cls.first_stage and bool(getattr(arch, cls.flag))

    def build(self, classes: int, channels: int) -> None:
        """Create this source's layers."""
        raise NotImplementedError

    def features(self, signal: torch.Tensor, idx: torch.Tensor, stack: Any,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, W, C) at conditioning samples idx (W,), past_end (W,) bool) of a non-empty signal."""
        raise NotImplementedError

    def add(self, e: torch.Tensor, cond: Conditioning, idx: torch.Tensor, stack: Any) -> torch.Tensor:
        """e (B, W, C) + this signal's features at conditioning samples idx (W,)."""
        signal = getattr(cond, self.name)
        if signal is None or signal.shape[-1] == 0:
            return e + self.dropped
        feats, past_end = self.features(signal, idx, stack, e.dtype)
        return self.put(e, feats, past_end, getattr(cond, "drop_" + self.name, None))

    def macs(self, channels: int) -> int:
        """Multiply-adds per conditioning sample."""
        return 0

    def put(self, e: torch.Tensor, feats: torch.Tensor, past_end: torch.Tensor, drop: torch.Tensor | None):
        """e + feats (B, W, C) where the signal exists; the learned ``dropped`` vector at samples past
        its end (past_end (W,) bool) and in dropped rows (drop (B,) bool)."""
        off = past_end[None, :, None]
        if drop is not None:
            off = off | drop.to(past_end.device).bool()[:, None, None]
        return e + torch.where(off, self.dropped, feats)


class BelowSource(Source):
    """The tier below: an embedding of its codes (conditioning sample j = below[j])."""

    name, flag, first_stage = "below", "use_tier_below", 1

    def build(self, classes, channels):
        self.embed = nn.Embedding(classes, channels)

    def features(self, signal, idx, stack, dtype):
        n = signal.shape[-1]
        return self.embed(signal[:, idx.clamp(max=n - 1)]), idx >= n  # (B, W, C)


class RollSource(Source):
    """The piano roll: a projection of the frame that covers each conditioning sample."""

    name, flag = "roll", "use_roll"

    def build(self, classes, channels):
        self.proj = nn.Linear(ROLL_CHANNELS, channels)

    def features(self, signal, idx, stack, dtype):
        n = signal.shape[-1]
        frame = (idx * stack.up * stack.roll_fps) // stack.rate  # roll frame of each sample
        r = signal[:, :, frame.clamp(max=n - 1)].to(dtype).transpose(1, 2)  # (B, W, 256)
        return self.proj(r), frame >= n

    def macs(self, channels: int) -> int:
        return ROLL_CHANNELS * channels


# The sources a stage may read, in the order their features are summed; each source's ``wanted``
# (a stage config flag: use_tier_below, use_roll) decides whether a stage builds it.
SOURCES: dict[str, type[Source]] = {"below": BelowSource, "roll": RollSource}
