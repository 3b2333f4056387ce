"""Batch assembly shared by training and evaluation: the alignment unit, crop geometry, windows
of whole tracks, end-of-piece and opening crops, loss weights and a batch's conditioning (with dropout).

Alignment (ARCHITECTURE.md): sample j of tier k-1 covers samples ``[j*f, (j+1)*f)`` of tier k and
roll frame g covers stage samples ``[g * rate / roll_fps, (g+1) * rate / roll_fps)``, so a crop or
chunk that starts and ends on multiples of ``lcm(f, rate / roll_fps)`` cuts the tier below and the
roll exactly; evaluation's chunks also keep the history stack's pooling grid (``history_pool``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models import Conditioning
from pipeline.config import StrataConfig, stage_factor, uses_tier_below
from pipeline.corpus.dataset import align_unit, track_ends, track_openings

END_PROB = 0.125  # share of examples that are a track's last crop (stages with end_class)


# ----------------------------------------------------------------------------- alignment


def alignment_unit(cfg: StrataConfig, k: int, history_pool: int = 1) -> int:
    """``align_unit`` (pipeline/corpus/dataset.py) of stage k of ``cfg`` (training crops: no pool; evaluation
    chunks: the pool)."""
    return align_unit(stage_factor(cfg, k), cfg.stages[k].rate, cfg.data.roll_fps, history_pool)


def round_up(n: int, unit: int) -> int:
    return -(-int(n) // unit) * unit


@dataclass(frozen=True)
class CropGeometry:
    """Training crops of one stage: ``context`` (input only, left) + ``crop`` (scored) = ``window``;
    below / roll reach ``margin`` samples past the window (the stage's lookahead)."""

    unit: int
    context: int
    margin: int
    window: int


def crop_geometry(cfg: StrataConfig, k: int, stage) -> CropGeometry:
    """The context covers the main stack's or the linear path's receptive field, whichever is longer;
    context and margin are rounded up to the alignment unit."""
    unit = alignment_unit(cfg, k)
    context = round_up(max(stage.receptive_field, stage.linear_receptive_field), unit)
    margin = round_up(stage.lookahead, unit)
    return CropGeometry(unit, context, margin, context + cfg.stages[k].crop)


def window(item: dict, a: int, b: int, f: int, hop: int) -> dict:
    """Samples [a, b) of a whole-track item (a, b multiples of f and hop)."""
    out = {"x": item["x"][a:b], "genre": item["genre"], "has_roll": item["has_roll"]}
    if "below" in item:
        out["below"] = item["below"][a // f : b // f]
    out["roll"] = item["roll"][:, a // hop : b // hop]
    return out


# ----------------------------------------------------------------------------- openings, end of piece, loss


class _TrackWindows:
    """One window per training track (``items``: StageCrops items), drawn into batches by ``_swap_in``."""

    items: list[dict]

    def __len__(self) -> int:
        return len(self.items)


def _swap_in(batch: dict, windows: _TrackWindows, share: float, gen: torch.Generator) -> torch.Tensor:
    """Replace about ``share`` of the batch's examples, in place, by windows drawn from ``windows``
    (uniforms, then picks, from ``gen``); the replaced rows as bool (B,)."""
    B = batch["x"].shape[0]
    mask = torch.rand(B, generator=gen) < share
    picks = torch.randint(len(windows), (B,), generator=gen)
    for i in torch.nonzero(mask).flatten().tolist():
        it = windows.items[int(picks[i])]
        for key in ("x", "below", "roll", "cond_len"):
            if key in batch:
                batch[key][i] = it[key]
        batch["has_roll"][i] = bool(it["has_roll"])
        batch["genre"][i] = it["genre"]
    return mask


class OpeningCrops(_TrackWindows):
    """The first ``window`` samples of each training track, scored from sample 0.

    A random crop scores only samples whose receptive field lies inside the track (the window's left
    ``context`` is input only), so a stage never learns how a piece starts from nothing, yet every
    generated piece does: its first samples see the zero state of every stack, as sample 0 of a full
    pass does.  These crops, scored from their first sample, are that state (stage config ``opening_share``).
    """

    def __init__(self, data_dir, cfg: StrataConfig, k: int, window: int, margin: int = 0,
                 manifest: dict | None = None):
        self.items = track_openings(data_dir, cfg, k, "train", window, margin, manifest)


def insert_opening_crops(batch: dict, openings: OpeningCrops | None, share: float, gen: torch.Generator) -> dict:
    """Replace about ``share`` of the examples by track openings; adds "open_mask" bool (B,) (those rows)."""
    is_open = torch.zeros(batch["x"].shape[0], dtype=torch.bool)
    if openings is not None and len(openings) and share > 0:
        is_open = _swap_in(batch, openings, share, gen)
    batch["open_mask"] = is_open
    return batch


def silence_context(batch: dict, share: float, context: int, bits: int, gen: torch.Generator,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
    """Set the left ``context`` of about ``share`` of the crops (not the rows ``keep``) to the silence code, in
    place: their first scored samples see the nothing a generated piece starts from, under the crop's own score
    (stage config ``entry_share``).  Draws from ``gen`` only when ``share`` > 0.  The rows as bool (B,)."""
    x = batch["x"]  # (B, T) codes
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    if share <= 0 or context <= 0:
        return mask
    mask = torch.rand(x.shape[0], generator=gen) < share
    if keep is not None:
        mask &= ~keep
    x[mask, :context] = 2 ** (bits - 1)
    return mask


class EndCrops(_TrackWindows):
    """The last ``window`` samples of each training track (for the end-of-piece class), below and
    roll with the same right ``margin`` as the other crops (missing past the end)."""

    def __init__(self, data_dir, cfg: StrataConfig, k: int, window: int, margin: int = 0,
                 manifest: dict | None = None):
        self.items = track_ends(data_dir, cfg, k, "train", window, margin, manifest)


def insert_end_crops(batch: dict, ends: EndCrops | None, gen: torch.Generator, end_code: int | None) -> dict:
    """Append one target position; put END after a track's last crop for some examples.

    batch["x"] (B, W) -> (B, W + 1); returns also "end_mask" bool (B,) (examples ending in END).
    """
    x = batch["x"]
    B, W = x.shape
    is_end = torch.zeros(B, dtype=torch.bool)
    if ends is not None and len(ends) and end_code is not None:
        is_end = _swap_in(batch, ends, END_PROB, gen)
    last = torch.full((B, 1), 128, dtype=x.dtype)
    if end_code is not None:
        last[is_end, 0] = end_code
    batch["x"] = torch.cat([batch["x"], last], dim=1)  # (B, W + 1)
    batch["end_mask"] = is_end
    return batch


def loss_weights(B: int, T: int, context: int, window: int, end_mask: torch.Tensor | None,
                 open_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weights (B, T): 1 on the crop (after the context; from sample 0 for openings, ``open_mask``),
    1 on END targets, 0 elsewhere."""
    w = torch.zeros(B, T)
    w[:, context:window] = 1.0
    if open_mask is not None:
        w[open_mask, :context] = 1.0
    if end_mask is not None and T > window:
        w[:, window] = end_mask.float()
    return w


# ----------------------------------------------------------------------------- conditioning


def model_inputs(batch: dict, cfg: StrataConfig, k: int, n_genres: int, gen: torch.Generator | None,
                 drop: bool) -> Conditioning:
    """The ``Conditioning`` of ``stage(x, cond)``, dropout masks (``drop``) drawn from ``gen``."""
    s = cfg.stages[k]
    B = batch["x"].shape[0]

    def coin(p: float) -> torch.Tensor:  # (B,) bool
        if not drop or p <= 0:
            return torch.zeros(B, dtype=torch.bool)
        return torch.rand(B, generator=gen) < p

    kw: dict[str, Any] = {}
    genre = batch["genre"].long()  # (B,)
    if s.use_genre:
        kw["genre"] = torch.where(coin(s.genre_dropout), torch.full_like(genre, n_genres), genre)
    else:
        kw["genre"] = torch.full_like(genre, n_genres)
    if uses_tier_below(cfg, k):
        kw["below"] = batch["below"]  # (B, (T + margin) // f)
        kw["drop_below"] = coin(s.below_dropout)
    if s.use_roll:
        has_roll = torch.as_tensor(batch["has_roll"], dtype=torch.bool)
        kw["roll"] = batch["roll"]  # (B, 256, F)
        kw["drop_roll"] = coin(s.roll_dropout) | ~has_roll
    if ("below" in kw or "roll" in kw) and "cond_len" in batch:
        kw["cond_len"] = batch["cond_len"]  # (B,) below / roll past it: missing (a track's end)
    if s.history.enabled:
        kw["drop_history"] = coin(s.history_dropout)
    return Conditioning(**kw)


def model_x(x: torch.Tensor, head, bits: int) -> torch.Tensor:
    """Codes -> what the stage reads (the head decides: int64 codes, or float audio)."""
    return head.codes_to_input(x, bits)
