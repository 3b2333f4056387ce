"""Building blocks: causal padding, gated activation, the gated causal stack of the context stacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_pad(x: torch.Tensor, dilation: int, kernel_size: int) -> torch.Tensor:
    """Left-pad (B, C, T) with zeros so a dilated conv sees only the past: (B, C, T + d*(k-1))."""
    return F.pad(x, (dilation * (kernel_size - 1), 0))


def gated(z: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """WaveNet gate: tanh(first half) * sigmoid(second half) along ``dim``."""
    a, b = z.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def context_dilations(layers: int, kernel_size: int) -> list[int]:
    """Dilations kernel_size**i: full coverage of the receptive field, which grows as k**layers."""
    base = max(kernel_size, 2)
    return [base**i for i in range(layers)]


class GatedCausalStack(nn.Module):
    """Residual gated causal dilated convs with ``channels`` channels (context stacks).

    ``block(i, window)`` is the one piece of math, used by the full pass (``forward``, on the
    left-padded sequence) and by the streaming step (``step``, on a queue of past inputs).
    """

    def __init__(self, channels: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilations = context_dilations(layers, kernel_size)
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, 2 * channels, kernel_size, dilation=d) for d in self.dilations
        )
        self.res = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)

    @property
    def receptive_field(self) -> int:
        """Inputs (at the stack's rate) that affect one output: 1 + sum d*(k-1)."""
        return 1 + sum(d * (self.kernel_size - 1) for d in self.dilations)

    def span(self, i: int) -> int:
        return self.dilations[i] * (self.kernel_size - 1) + 1

    def block(self, i: int, window: torch.Tensor) -> torch.Tensor:
        """Residual update of layer i: window (B, C, T + span-1) -> (B, C, T)."""
        return self.res[i](gated(self.convs[i](window)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, C, T), zero history before t=0
        for i, d in enumerate(self.dilations):
            h = h + self.block(i, causal_pad(h, d, self.kernel_size))
        return h

    def macs_per_step(self) -> int:
        c, k = self.channels, self.kernel_size
        return len(self.dilations) * (k * c * 2 * c + c * c)

    # ---- streaming: a queue of the last span inputs per layer
    def init_state(self, batch: int, dtype=torch.float32, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.channels, self.span(i), dtype=dtype, device=device)
                for i in range(len(self.dilations))]

    def step(self, state: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        """One new input h (B, C) -> output (B, C); updates the queues in ``state``."""
        for i in range(len(self.dilations)):
            q = state[i]
            q[:, :, :-1] = q[:, :, 1:].clone()  # (B, C, span)
            q[:, :, -1] = h
            h = h + self.block(i, q)[:, :, 0]
        return h
