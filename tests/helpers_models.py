"""Shared pieces of the models/ tests: a small stage config, inputs, the one-thread fixture."""

from __future__ import annotations

import torch

from models import Stage

RATE, FACTOR, FPS, CLASSES, GENRES = 800, 4, 100, 32, 3

# perturbation tests: float64 (a tiny far-reaching change survives rounding), wide skips (ReLUs
# cannot hide it)
WIDE = {"residual_channels": 16, "gate_channels": 16, "skip_channels": 64, "dtype": torch.float64}


def shipped_linear() -> dict:
    """The linear-path keys as a shipped config has them (StageConfig's defaults, as configs/tiny.yaml):
    the linear path and the adaptive scale on.  ``stage_cfg`` alone leaves them out (path off)."""
    import dataclasses

    from models.config import ABSENT_MEANS, StageArchConfig

    return {f.name: f.default for f in dataclasses.fields(StageArchConfig) if f.name in ABSENT_MEANS}


def stage_cfg(**over) -> dict:
    """A small stage config as a dict; nested dicts in ``over`` update their section."""
    cfg = {
        "rate": RATE, "residual_channels": 8, "gate_channels": 8, "skip_channels": 8,
        "kernel_size": 2, "dilation_cycles": 2, "cycle_length": 4,
        "use_genre": False, "use_roll": False, "use_tier_below": False,
        "conditioning": {"channels": 8, "layers": 2, "kernel_size": 3, "lookahead": 2},
        "history": {"enabled": False, "pool": 4, "channels": 8, "layers": 3, "kernel_size": 2},
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def randomize_biases(st: Stage) -> None:
    """Make biases and the learned vectors non-trivial (zero-initialised ones hide paths)."""
    with torch.no_grad():
        for name, p in st.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                p.normal_(0, 0.3)
            elif name.endswith("score.envelope"):  # a learned timbre per genre (models/score.py)
                p.normal_(0, 0.2)


def inputs(st: Stage, t: int, b: int = 2, seed: int = 1) -> dict:
    """Random x (codes, or PCM floats for a mixture head), genre, tier below and roll for ``st``."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(st.parameters()).dtype
    if not st.head.float_input:
        x = torch.randint(0, st.classes, (b, t), generator=g)
    else:
        x = torch.rand(b, t, generator=g, dtype=torch.float64).to(dtype) * 2 - 1
    return {
        "x": x,
        "genre": torch.tensor([0, GENRES][:b]),
        "below": torch.randint(0, st.classes, (b, t // FACTOR), generator=g),
        "roll": (torch.rand(b, 256, t * FPS // RATE, generator=g) > 0.8).to(dtype),
    }


def changed_positions(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Time indices where (B, C, T) outputs differ at all."""
    return ((a - b).abs().amax(dim=(0, 1)) > 0).nonzero()[:, 0]
