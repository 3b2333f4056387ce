"""Context stacks: conditioning (tier below + piano roll, non-causal) and history (own past, causal)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import Conditioning, Source
from models.layers import GatedCausalStack


class ConditioningStack(nn.Module):
    """Reads its sources (tier below, piano roll: ``models/conditioning.py``) at the conditioning
    rate ``rate / up``.

    Conditioning sample j covers stage samples [j*up, (j+1)*up).  The stack is causal over the
    input advanced by ``lookahead``: its output for j sees inputs up to index j + lookahead
    (and ``receptive_field - 1`` before that).  Inputs past the end of the piece, a missing
    signal, and per-example dropout all use each source's learned "dropped" vector (never zeros
    that would read as silence).  A learned per-phase projection upsamples to the stage's rate.
    """

    # parameter names before the sources were modules (old model files are read with these)
    _OLD_KEYS = {"below_embed.weight": "sources.below.embed.weight", "below_dropped": "sources.below.dropped",
                 "roll_proj.weight": "sources.roll.proj.weight", "roll_proj.bias": "sources.roll.proj.bias",
                 "roll_dropped": "sources.roll.dropped"}

    def __init__(self, channels: int, layers: int, kernel_size: int, lookahead: int, up: int,
                 rate: int, roll_fps: int, sources: dict[str, Source]) -> None:
        super().__init__()
        self.channels, self.lookahead, self.up = channels, lookahead, up
        self.rate, self.roll_fps = rate, roll_fps
        self.sources = nn.ModuleDict(sources)  # summed in this order
        self.stack = GatedCausalStack(channels, layers, kernel_size)
        self.upsample = nn.Conv1d(channels, channels * up, 1)  # per-phase projection

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for old, new in self._OLD_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def receptive_field(self) -> int:
        return self.stack.receptive_field

    def inputs(self, batch: int, cond: Conditioning, w0: int, w1: int) -> torch.Tensor:
        """Input features for conditioning samples [w0, w1): (B, C, w1 - w0)."""
        dev, dtype = self.upsample.weight.device, self.upsample.weight.dtype
        idx = torch.arange(w0, w1, device=dev)  # (W,)
        e = torch.zeros(batch, w1 - w0, self.channels, device=dev, dtype=dtype)  # (B, W, C)
        for source in self.sources.values():
            e = source.add(e, cond, idx, self)
        return e.transpose(1, 2)  # (B, C, W)

    def features(self, batch: int, cond: Conditioning, j0: int, j1: int) -> torch.Tensor:
        """Upsampled features for conditioning samples [j0, j1): (B, C, (j1 - j0) * up).

        Exact for any j0 (the window includes a halo of receptive_field - 1 inputs), so the
        full pass (j0 = 0) and chunked streaming give the same values.
        """
        w0 = max(0, j0 + self.lookahead - self.receptive_field + 1)
        w1 = j1 + self.lookahead
        h = self.stack(self.inputs(batch, cond, w0, w1))  # (B, C, W)
        h = h[:, :, j0 + self.lookahead - w0:]  # (B, C, j1 - j0)
        u = self.upsample(h)  # (B, C*up, J)
        b, _, j = u.shape
        return u.view(b, self.channels, self.up, j).transpose(2, 3).reshape(b, self.channels, j * self.up)

    def macs_per_sample(self, chunk: int) -> float:
        """Multiply-adds per stage sample, amortised over chunks of ``chunk`` stage samples."""
        per_j = self.stack.macs_per_step() + self.channels * self.channels * self.up
        per_j += sum(source.macs(self.channels) for source in self.sources.values())
        j = max(chunk // self.up, 1)
        return per_j * (j + self.receptive_field - 1 + self.lookahead) / (j * self.up)


class HistoryStack(nn.Module):
    """The stage's own past, mean-pooled over ``pool`` samples, through causal dilated convs.

    Output frame m (used for stage samples [m*pool, (m+1)*pool)) depends only on frames < m,
    i.e. samples < m*pool: strictly causal.  Frame 0 has a learned "start" vector; dropped
    examples get a learned "cut off" vector everywhere.
    """

    def __init__(self, in_channels: int, channels: int, layers: int, kernel_size: int, pool: int) -> None:
        super().__init__()
        self.pool, self.channels = pool, channels
        self.in_proj = nn.Linear(in_channels, channels)
        self.stack = GatedCausalStack(channels, layers, kernel_size)
        self.start = nn.Parameter(0.1 * torch.randn(channels))
        self.cut = nn.Parameter(0.1 * torch.randn(channels))

    @property
    def receptive_field(self) -> int:
        """Frames that affect one history output."""
        return self.stack.receptive_field

    def forward(self, e: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """e (B, T, R) embeddings of x (not shifted) -> (B, H, ceil(T / pool)) per-frame features."""
        b, t, r = e.shape
        frames = (t - 1) // self.pool  # complete frames that some position < T may use
        pooled = e[:, : frames * self.pool].reshape(b, frames, self.pool, r).mean(2)  # (B, M, R)
        h = self.stack(self.in_proj(pooled).transpose(1, 2))  # (B, H, M)
        u = torch.cat([self.start.view(1, -1, 1).expand(b, -1, 1), h], dim=2)  # (B, H, M + 1)
        return self.cut_rows(u, drop)

    def cut_rows(self, u: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """Features u (B, H[, M]) with the dropped rows (drop (B,) bool) set to the learned "cut off" vector."""
        if drop is None:
            return u
        tail = [1] * (u.dim() - 2)
        return torch.where(drop.to(u.device).bool().view(-1, 1, *tail), self.cut.view(1, -1, *tail), u)

    def first(self, batch: int) -> torch.Tensor:
        """The feature of frame 0 (before any complete frame): (B, H)."""
        return self.start.expand(batch, -1)

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> list[torch.Tensor]:
        return self.stack.init_state(batch, dtype, device)

    def step(self, state: list[torch.Tensor], mean: torch.Tensor) -> torch.Tensor:
        """One completed frame's mean embedding (B, R) -> feature (B, H) for the next frame."""
        return self.stack.step(state, F.linear(mean, self.in_proj.weight, self.in_proj.bias))

    def macs_per_frame(self, in_channels: int) -> int:
        return in_channels * self.channels + self.stack.macs_per_step()
