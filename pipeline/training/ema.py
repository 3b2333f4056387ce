"""Exponential moving average of a model's weights, checkpointable by Accelerate.

``EMA`` keeps float32 shadow copies of the trainable parameters.  It has ``state_dict`` /
``load_state_dict`` (plain tensors and numbers only), so ``accelerator.register_for_checkpointing``
saves and restores it with the rest of the training state.  ``with ema.applied(model):`` swaps
the averaged weights in for validation or export and puts the live weights back on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Shadow weights ``s <- d * s + (1 - d) * w`` with a warm-up ``d_n = min(decay, (1+n)/(10+n))``."""

    def __init__(self, model: nn.Module, decay: float | None = 0.999):
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters() if p.requires_grad
        }

    @property
    def enabled(self) -> bool:
        return self.decay is not None

    def current_decay(self) -> float:
        """The decay used for the next update (warm-up keeps early averages from lagging)."""
        n = self.updates
        return min(float(self.decay), (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        if not self.enabled:
            return
        d = self.current_decay()
        for name, p in model.named_parameters():
            s = self.shadow.get(name)
            if s is not None:
                s.mul_(d).add_(p.detach().float(), alpha=1.0 - d)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model`` (no-op when EMA is off)."""
        if not self.enabled:
            yield model
            return
        saved: dict[str, torch.Tensor] = {}
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, s in self.shadow.items():
                p = params[name]
                saved[name] = p.detach().clone()
                p.copy_(s.to(p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, w in saved.items():
                    params[name].copy_(w)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks parameters: {sorted(missing)[:3]}")
        for name, t in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(t)
