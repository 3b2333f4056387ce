"""The anchored scale: a fine stage's adaptive scale held to the level of the tier below (issue 21).

In training the adaptive scale s_adapt follows the recent |residuals| of the real audio; in sampling it
follows the stage's own draws, and below temperature 1 those shrink step after step until s_adapt sits at
its floor.  Measured on the demo's stage 1 (four test pieces, 6 s each, ``make demo``'s run): fed the real
audio, s_adapt has medians 0.015 (renaissance) to 0.06 (chorale); fed its own draws at temperature 0.6,
0.004 for every genre: the fine band is 12-24 dB too weak and the genres' brightness is gone.

With an anchor mix lambda (``Draw.scale_anchor``, ``generate.scale_anchor`` per stage)

    s_adapt(t) = floor + (1 - lambda) * sum_i w_i |r(t - i)| + lambda * ratio * level(t // factor)

where ``level`` is the tier below's local mean |value| (``below_level``: causal, so a pipelined cascade
can compute it as the tier below arrives) and ``ratio`` the genre's mean s_adapt over mean level, measured
with the real audio on the training split (``pipeline/training/scale_anchor.py``, per stage
``scale_anchor.json``).  lambda 0 is the stage as trained; lambda 1 sets the scale from the tier below and
the genre alone, so it can neither collapse nor run away.  Both sampling engines read the same per-chunk
buffer (``anchor_part``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANCHOR_WINDOW = 32  # tier-below samples in the level's mean (16 ms at 2 kHz, 8 ms at 4 kHz)
ANCHOR_FILE = "scale_anchor.json"  # per stage folder: the genres' ratios


def below_level(values: torch.Tensor, j0: int, j1: int) -> torch.Tensor:
    """values (B, m) decoded tier below -> (B, j1 - j0): level(j) = mean |values[j - W + 1 .. j]|,
    W = ``ANCHOR_WINDOW``, indices outside [0, m) read as 0 (a causal moving average)."""
    b, m = values.shape
    lo = j0 - ANCHOR_WINDOW + 1
    idx = torch.arange(lo, j1, device=values.device)  # (W - 1 + j1 - j0,)
    inside = (idx >= 0) & (idx < m)
    a = torch.where(inside[None, :], values[:, idx.clamp(0, max(m - 1, 0))].abs(), torch.zeros(()))
    kernel = torch.full((1, 1, ANCHOR_WINDOW), 1.0 / ANCHOR_WINDOW, dtype=a.dtype, device=a.device)
    return F.conv1d(a.unsqueeze(1), kernel)[:, 0]  # (B, j1 - j0)


def anchor_part(lin, below: torch.Tensor | None, j0: int, j1: int, factor: int, mix: float,
                ratio: float) -> torch.Tensor | None:
    """mix * ratio * level(t // factor) for stage samples [j0 * factor, j1 * factor): (B, (j1 - j0) * factor),
    or None (no anchor: mix 0 or no tier below).  ``lin``: the stage's LinearPath (decodes the codes)."""
    if mix <= 0 or below is None or below.shape[-1] == 0:
        return None
    level = below_level(lin.decode(torch.as_tensor(below).long()).double(), j0, j1)  # (B, j1 - j0)
    return (mix * ratio * level).repeat_interleave(int(factor), dim=1)


def genre_ratio(anchor: dict | None, genre: str | None) -> float | None:
    """The ratio for a piece of ``genre`` (None: no genre, the pooled ratio) from a stage's
    ``scale_anchor.json`` content; None without a calibration."""
    if not anchor:
        return None
    ratios = anchor.get("ratios", {})
    value = ratios.get(genre) if genre is not None else None
    return float(value if value is not None else anchor["pooled"])
