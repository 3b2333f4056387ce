"""The draw shared by both sampling engines (models/sampling.py the reference, models/fused.py the
fused kernel): each stream's counter-based uniforms (SplitMix64), the tier prior's scale, grid and
centre, and ``Draw``, how a run of steps chooses its samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.mulaw import decode_values

GOLDEN, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
SALT = np.uint64(0xD1B54A32D192ED03)  # a step's second uniform comes from seed ^ SALT


def stream_seeds(generator: torch.Generator | None, batch: int) -> np.ndarray:
    """(B,) uint64: one seed per stream, drawn from ``generator`` (its only use for categorical heads)."""
    s = torch.randint(0, 2**62, (batch,), generator=generator, dtype=torch.int64)
    return s.numpy().astype(np.uint64)


def stream_uniforms(seeds: np.ndarray, t: int) -> np.ndarray:
    """(B,) float64 in [0, 1): stream b's uniform of step t, SplitMix64 of seeds[b] + (t + 1) * golden
    (a counter-based generator: a stream's draws depend on its seed and the step only, so batching,
    row groups and the engine do not change them; models/fused_kernel.py ``_uniform`` is the twin)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as intended
        z = seeds + np.uint64(t + 1) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def step_uniforms(seeds: np.ndarray, t: int, n: int) -> np.ndarray:
    """The ``n`` uniforms (1 or 2) of step t for each stream: (B,), or (B, 2) with the second from
    seed ^ SALT (a mixture head's component and logistic)."""
    u = stream_uniforms(seeds, t)
    return u if n == 1 else np.stack([u, stream_uniforms(seeds ^ SALT, t)], axis=1)


def prior_scale(stage, below: torch.Tensor | None, sigma: float) -> float:
    """The tier prior's 1 / (2 sigma^2), or 0 where there is none: sigma 0, or no tier below to hold
    to (stage 0, or none given).  Its centre is ``prior_band`` (the fused engine: per block)."""
    if sigma <= 0 or getattr(stage, "factor", 1) <= 1 or not getattr(stage, "use_below", False):
        return 0.0
    if below is None or below.shape[-1] == 0:
        return 0.0
    return 0.5 / sigma**2


def prior_values(classes: int) -> torch.Tensor:
    """(classes,) float32: the decoded value of each mu-law class (the tier prior's grid)."""
    return torch.tensor(decode_values(classes), dtype=torch.float32)


def prior_band(below: torch.Tensor, factor: int, classes: int, t0: int, t1: int) -> torch.Tensor:
    """The tier prior's centre for stage samples [t0, t1): the decoded tier below (B, m) linearly
    interpolated to the stage's rate (stage sample t sits at below index t / factor): (B, t1 - t0).
    Reads below indices up to (t1 - 1) // factor + 1."""
    m = below.shape[1]
    pos = torch.arange(t0, t1, dtype=torch.float32) / factor
    i0 = pos.floor().long().clamp(max=m - 1)
    i1 = (i0 + 1).clamp(max=m - 1)
    w = (pos - i0).clamp(0, 1)
    table = prior_values(classes)
    return table[below[:, i0].long()] * (1 - w) + table[below[:, i1].long()] * w


@dataclass(frozen=True, eq=False)
class Draw:
    """How a run of steps chooses its samples: the one object ``models.sampling.sample_stage`` (and
    ``pipeline.generation.generate.run_stage``) take and the fused engine reads.  The defaults are
    plain sampling (no guidance, temperature 1, no nucleus, no tier prior, a fixed length); the
    generation parameters' own defaults and ranges are ``GenerateParams``' (pipeline/generation/plan.py)."""

    guidance: float = 0.0  # classifier-free guidance W (the twins run when the streams are ``conditioned``)
    keep_roll: bool = False  # the guidance twins keep the roll (drop the genre alone: guided towards the genre)
    temperature: float = 1.0
    # the adaptive scale reads each drawn sample's |residual| / temperature: a temperature below 1 narrows every
    # draw without also shrinking the scale step after step (it follows the residuals of its own narrowed draws)
    steady_scale: bool = False
    # > 0: the score taps' share of the prediction where notes sound, instead of the network's (sigmoid) share
    score_share: float = 0.0
    # without a fixed share: the network's share raised to this power (< 1: towards 1, the taps' resonance sharper,
    # keeping the network's order between frames and genres; 1: as trained)
    share_power: float = 1.0
    # > 0: the adaptive scale's mix with the tier below's level times ``anchor_ratio`` (models/anchor.py)
    scale_anchor: float = 0.0
    anchor_ratio: float = 0.0
    # > 0: the |residual| of a drawn sample that the adaptive scale reads is at most this many times the logistic
    # scale it was drawn with (one far draw at a note change cannot raise the scale 15-fold: a burst of noise)
    scale_clip: float = 0.0
    # > 0: the adaptive scale's floor where the score's notes sound, in place of the stage's trained
    # ``score.scale_floor`` (models/predictor.py, the silence trap; a stage without score taps has no notes to read)
    note_floor: float = 0.0
    # > 0: the adaptive scale's floor everywhere (models/predictor.py ADAPT_FLOOR, 1e-3, in training): a fine stage
    # draws its new band at about this scale whatever the level of the music, a hiss that shows where the tier below
    # goes quiet (a rest, a piece's last release); 0: as trained
    adapt_floor: float = 0.0
    # > 0: the adaptive scale's floor from sample ``tail_from`` on (the score's last note has ended, none sounds
    # again), in place of ``adapt_floor``: after the last note the stage hears nothing but its own release, and at
    # the floor it was trained with (1e-3) it settles at k * floor / (1 - 2 ln 2 k) instead of decaying
    # (models/predictor.py, the silence trap's fixed point); before the last note the floor is as set above, so
    # an opening in silence is not trapped.  ``tail_from`` < 0: no tail (a piece without a score)
    tail_floor: float = 0.0
    tail_from: int = -1
    top_p: float = 1.0  # nucleus mass (1: off)
    tier_prior: float = 0.0  # sigma of the tier prior around the tier below (0: off)
    free_length: bool = False  # a stream ends where END has at least ``end_threshold`` (from ``min_length``)
    min_length: int = 1
    end_threshold: float = 0.5
    round_to: int = 1  # when every stream ended, the piece keeps whole blocks of this many samples
    seeds: np.ndarray | None = None  # (B,) uint64: each stream's uniforms (``stream_uniforms``); else drawn
    # filled in by ``sample_stage`` for the engines
    batch: int = 0  # streams (rows = 2 * batch with guidance twins)
    twin: bool = False
    prior_scale: float = 0.0  # tier prior: 1 / (2 sigma^2) (0: off); centre ``prior_band``
    end_code: int | None = None

    @property
    def tail_start(self) -> int | None:
        """The sample from which ``tail_floor`` replaces the floor, or None (no tail floor, or no score)."""
        return int(self.tail_from) if self.tail_floor > 0 and self.tail_from >= 0 else None

    @property
    def adapt_gain(self) -> float:
        """Factor on a drawn sample's |residual| before the adaptive scale reads it (1: as in training)."""
        return 1.0 / self.temperature if self.steady_scale and self.temperature > 0 else 1.0
