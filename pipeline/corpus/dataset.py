"""Reading a dataset folder: the manifest, random aligned training crops, whole tracks.

Alignment (ARCHITECTURE.md): sample j of tier k-1 covers samples ``[j*f, (j+1)*f)`` of tier k,
and roll frame g covers stage samples ``[g * rate / roll_fps, (g+1) * rate / roll_fps)``.  A crop
of stage k starts at a multiple of ``lcm(f, rate // roll_fps)`` (``align_unit``),
so the crop of the tier below (start / f) and of the roll (start * roll_fps / rate) are exact.

Right margin: a stage looks ahead in the tier below and the roll, so a crop's "below" and "roll"
reach ``margin`` stage samples past its end (train.py passes the stage's lookahead, rounded up to
the alignment unit); otherwise the crop's last positions would see them as missing, which
evaluation and generation never do inside a piece.  Past the track's real end they are padding
(silence) and "cond_len" (stage samples of below / roll that exist, from the crop's start) tells
the model to read them as missing, as at the end of a piece in evaluation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from models.roll import ROLL_CHANNELS, roll_input
from pipeline.config import StrataConfig, stage_factor
from pipeline.errors import DatasetError
from pipeline.io import load_npy


def align_unit(factor: int, rate: int, roll_fps: int, history_pool: int = 1) -> int:
    """lcm(f, rate / roll_fps[, history pool]): the grid of crop and chunk boundaries."""
    return math.lcm(int(factor), int(rate) // int(roll_fps), int(history_pool))


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a dataset folder; ``DatasetError`` if missing, unreadable or empty."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{data_dir}: no manifest.json (run strata preprocess first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the manifest ({e})") from None
    if not isinstance(manifest, dict) or not manifest.get("tracks"):
        raise DatasetError(f"{data_dir}: no tracks in manifest.json (every input was skipped? see report.json)")
    return manifest


class _Tracks:
    """The tracks of one split as seen by stage k: lazily memory-mapped tiers and rolls."""

    def __init__(self, data_dir: str | Path, cfg: StrataConfig, stage: int, split: str, manifest: dict | None = None):
        self.dir = Path(data_dir)
        self.manifest = load_manifest(data_dir) if manifest is None else manifest
        if not 0 <= stage < len(cfg.stages):
            raise DatasetError(f"stage {stage} is not in the config ({len(cfg.stages)} stages)")
        self.rate = cfg.stages[stage].rate
        self.factor = stage_factor(cfg, stage)
        self.below_rate = cfg.data.rates[stage - 1] if stage > 0 else None
        self.roll_fps = int(self.manifest.get("roll_fps", cfg.data.roll_fps))
        self.silence = int(self.manifest.get("classes", cfg.data.classes)) // 2  # padding code of "below"
        self.n_genres = len(self.manifest["genres"])
        self._check_rates(stage)
        self.tracks = [t for t in self.manifest["tracks"] if t["split"] == split]
        if not self.tracks:
            raise DatasetError(f"{data_dir}: split '{split}' is empty")
        self._cache: dict[str, np.ndarray] = {}

    def _check_rates(self, stage: int) -> None:
        have = [int(r) for r in self.manifest.get("rates", [])]
        for what, r in (("tier", self.rate), ("tier below", self.below_rate)):
            if r is not None and r not in have:
                raise DatasetError(f"stage {stage}'s {what} {r} Hz is not in this dataset (rates {have})")
        if self.rate % self.roll_fps:
            raise DatasetError(f"stage {stage}: {self.rate} Hz is not a multiple of roll_fps={self.roll_fps}")

    def array(self, rel: str) -> np.ndarray:
        """A .npy file of the dataset, memory-mapped once."""
        if rel not in self._cache:
            path = self.dir / rel
            try:
                self._cache[rel] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{path}: cannot load ({e})") from None
        return self._cache[rel]

    def samples(self, t: dict) -> int:
        return int(t["samples"][str(self.rate)])

    def item(self, t: dict, start: int, length: int, margin: int = 0) -> dict[str, Any]:
        """Aligned window ``[start, start + length)`` of track ``t`` at the stage's rate; "below" and
        "roll" cover ``margin`` samples more, padded with silence past the track's end
        ("cond_len": how many of their L + margin stage samples exist)."""
        x = np.asarray(self.array(t["tiers"][str(self.rate)])[start : start + length], dtype=np.int64)  # (L,)
        span = length + margin
        out: dict[str, Any] = {"x": torch.from_numpy(x),
                               "cond_len": torch.tensor(min(span, self.samples(t) - start), dtype=torch.int64)}
        if self.below_rate is not None:
            f = self.factor
            below = np.asarray(self.array(t["tiers"][str(self.below_rate)])[start // f : (start + span) // f],
                               dtype=np.int64)
            below = np.pad(below, (0, span // f - len(below)), constant_values=self.silence)
            out["below"] = torch.from_numpy(below)  # ((L + margin) // f,)
        hop = self.rate // self.roll_fps  # stage samples per roll frame
        frames = span // hop
        roll = torch.zeros(ROLL_CHANNELS, frames, dtype=torch.float32)  # (256, F); silence past the end
        if t.get("roll"):
            g0 = start // hop
            r = roll_input(self.array(t["roll"])[:, :, g0 : g0 + frames])  # (256, <= F)
            roll[:, : r.shape[-1]] = torch.from_numpy(r)
        out["roll"] = roll
        out["has_roll"] = bool(t.get("roll"))
        out["genre"] = torch.tensor(int(t["genre_id"]), dtype=torch.int64)
        return out


class StageCrops(torch.utils.data.Dataset):
    """Random aligned crops for stage k: item i with seed s is always the same crop.

    item -> {"x": int64 (W,), "below": int64 ((W + margin) // f,) [k > 0],
             "roll": float32 (256, (W + margin) * roll_fps // rate), "has_roll": bool,
             "genre": int64 scalar, "cond_len": int64 scalar}     (W = context + crop)
    ``margin`` (a multiple of the start grid): stage samples of below / roll past the crop's end
    (see the module docstring).  Tracks are drawn with probability proportional to their length;
    tracks shorter than context + crop are left out.  ``manifest``: the dataset's, already read.
    """

    def __init__(self, data_dir, cfg: StrataConfig, stage: int, split: str = "train", context: int = 0,
                 seed: int = 0, length: int = 10**9, margin: int = 0, manifest: dict | None = None):
        self.data = _Tracks(data_dir, cfg, stage, split, manifest)
        self.crop = int(cfg.stages[stage].crop)
        self.window = int(context) + self.crop  # samples per item
        self.seed, self.length = int(seed), int(length)
        self.step = align_unit(self.data.factor, self.data.rate, self.data.roll_fps)  # crop start grid
        if margin < 0 or margin % self.step:
            raise ValueError(f"StageCrops: margin {margin} is not a non-negative multiple of {self.step}")
        self.margin = int(margin)
        self.tracks = [t for t in self.data.tracks if self.data.samples(t) >= self.window]
        if not self.tracks:
            longest = max(self.data.samples(t) for t in self.data.tracks)
            raise DatasetError(
                f"crop of {self.window} samples is longer than every track in split '{split}' "
                f"(longest: {longest} samples at {self.data.rate} Hz)"
            )
        lengths = np.array([self.data.samples(t) for t in self.tracks], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.n_starts = [(self.data.samples(t) - self.window) // self.step + 1 for t in self.tracks]

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(track position, start sample) of item ``index``: a pure function of (seed, index)."""
        rng = np.random.default_rng([self.seed, int(index)])
        i = int(rng.choice(len(self.tracks), p=self.weights))
        return i, int(rng.integers(self.n_starts[i])) * self.step

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        i, start = self.locate(index)
        return self.data.item(self.tracks[i], start, self.window, self.margin)


def track_ends(data_dir, cfg: StrataConfig, stage: int, split: str, window: int, margin: int = 0,
               manifest: dict | None = None) -> list[dict]:
    """The last ``window`` samples of every track of ``split`` that has them (StageCrops items:
    below / roll past the track's end are padding, ``cond_len`` stops at the end)."""
    data = _Tracks(data_dir, cfg, stage, split, manifest)
    hop = align_unit(data.factor, data.rate, data.roll_fps)
    ends = [(t, data.samples(t) // hop * hop - window) for t in data.tracks]
    return [data.item(t, start, window, margin) for t, start in ends if start >= 0]


def track_openings(data_dir, cfg: StrataConfig, stage: int, split: str, window: int, margin: int = 0,
                   manifest: dict | None = None) -> list[dict]:
    """The first ``window`` samples of every track of ``split`` that has them (StageCrops items at start 0)."""
    data = _Tracks(data_dir, cfg, stage, split, manifest)
    return [data.item(t, 0, window, margin) for t in data.tracks if data.samples(t) >= window]


def iter_tracks(data_dir, cfg: StrataConfig, stage: int, split: str,
                manifest: dict | None = None) -> Iterator[dict[str, Any]]:
    """Whole tracks of a split for exact evaluation: the item keys + "id" and "seconds"."""
    data = _Tracks(data_dir, cfg, stage, split, manifest)
    hop = align_unit(data.factor, data.rate, data.roll_fps)
    for t in data.tracks:
        n = data.samples(t) // hop * hop  # whole samples of below and roll (no-op for our datasets)
        item = data.item(t, 0, n)
        item["id"], item["seconds"] = t["id"], n / data.rate
        yield item


def split_tiers(
    data_dir: str | Path, manifest: dict, split: str, rate: int, max_seconds: float | None = None
) -> list[np.ndarray]:
    """Codes of every track of ``split`` at ``rate`` (cropped to ``max_seconds``): list of (n,)."""
    out = []
    for tr in manifest["tracks"]:
        if tr["split"] != split:
            continue
        x = load_npy(Path(data_dir) / tr["tiers"][str(rate)]).astype(np.int64)
        if max_seconds is not None:
            x = x[: int(max_seconds * rate)]
        out.append(x)
    return out
