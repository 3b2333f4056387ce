"""Calibrate the anchored scale of a fine stage (models/anchor.py): per genre, the stage's mean adaptive
scale fed the real audio over the tier below's mean level, on the training split.

Written to ``<run>/stages/<k>/scale_anchor.json`` for a trained run (training does not run it: the anchored
scale is measured, not in the presets; README "the scale, the share and a noise test"):

    python -m pipeline.training.scale_anchor --data DATA --run RUN [--stage K ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from models.anchor import ANCHOR_FILE, ANCHOR_WINDOW, below_level
from models.conditioning import Conditioning
from models.roll import roll_input

TRACKS_PER_GENRE = 8
SECONDS_PER_TRACK = 20.0


def _track_ratio_sums(stage, data: Path, track: dict, genre_id: int, seconds: float) -> tuple[float, float]:
    """(sum of s_adapt - floor, sum of level) over the first ``seconds`` of one track, the stage fed the real audio."""
    from pipeline.io import load_npy

    rate, f = int(stage.rate), stage.factor
    below_rate = rate // f
    n_below = int(seconds * below_rate)
    below = np.asarray(load_npy(data / track["tiers"][str(below_rate)]))[:n_below].astype(np.int64)
    n = len(below) * f
    x = np.asarray(load_npy(data / track["tiers"][str(rate)]))[:n].astype(np.int64)
    n = min(n, len(x)) // f * f
    if n == 0:
        return 0.0, 0.0
    x_t, below_t = torch.from_numpy(x[:n])[None], torch.from_numpy(below[:n // f])[None]
    roll = None
    if stage.arch.use_roll or stage.score is not None:
        if not track.get("roll"):
            return 0.0, 0.0  # the stage reads a roll: a track without one would calibrate another regime
        roll = torch.from_numpy(roll_input(load_npy(data / track["roll"])))[None]  # (1, 256, F)
    cond = Conditioning(genre=torch.tensor([genre_id]), below=below_t, roll=roll)
    with torch.no_grad(), stage.record_adaptive_scale() as trace:
        stage(x_t, cond)
    s = trace[0][0].double() - stage.linear.adapt_floor  # (n,)
    level = below_level(stage.linear.decode(below_t).double(), 0, n // f)[0].repeat_interleave(f)  # (n,)
    return float(s.sum()), float(level.sum())


def calibrate(stage, genres: list[str], data: str | Path, tracks_per_genre: int = TRACKS_PER_GENRE,
              seconds: float = SECONDS_PER_TRACK) -> dict:
    """The anchor calibration of a fine stage with an adaptive scale (``scale_anchor.json``'s content):
    {"ratios": {genre: ratio}, "pooled": ratio, "tracks": {genre: n}, "seconds_per_track", "window"};
    ``genres``: the stage's genre names (its genre ids index them)."""
    from pipeline.corpus.dataset import load_manifest

    if stage.linear is None or not stage.linear.adaptive or not stage.arch.use_tier_below:
        raise ValueError(f"stage {stage.index}: no adaptive scale and tier below to anchor")
    data = Path(data)
    manifest = load_manifest(data)
    stage.eval()
    sums: dict[str, list[float]] = {}
    for t in manifest["tracks"]:
        if t["split"] != "train" or t["genre"] not in genres:
            continue
        acc = sums.setdefault(t["genre"], [0.0, 0.0, 0])
        if acc[2] >= tracks_per_genre:
            continue
        s, level = _track_ratio_sums(stage, data, t, genres.index(t["genre"]), seconds)
        if level > 0:
            acc[0], acc[1], acc[2] = acc[0] + s, acc[1] + level, acc[2] + 1
    ratios = {g: round(a[0] / a[1], 6) for g, a in sums.items() if a[1] > 0}
    if not ratios:
        raise ValueError(f"stage {stage.index}: no training track with a tier below (and a roll) in {data}")
    pooled = sum(a[0] for a in sums.values()) / sum(a[1] for a in sums.values())
    return {"format": "strata-scale-anchor", "stage": stage.index, "window": ANCHOR_WINDOW,
            "ratios": ratios, "pooled": round(pooled, 6), "tracks": {g: a[2] for g, a in sums.items()},
            "seconds_per_track": seconds}


def write_calibration(run: str | Path, data: str | Path, k: int) -> dict:
    """Calibrate stage ``k`` of ``run`` on ``data`` and write its ``scale_anchor.json``."""
    from models.checkpoint import load_stage, read_stage_meta
    from pipeline.io import atomic_write_json

    folder = Path(run) / "stages" / str(k)
    stage = load_stage(folder)
    out = calibrate(stage, read_stage_meta(folder)["genres"], data)
    atomic_write_json(folder / ANCHOR_FILE, out)
    return out


def read_calibration(stage_folder: str | Path) -> dict | None:
    """A stage folder's ``scale_anchor.json`` (None when it has none)."""
    p = Path(stage_folder) / ANCHOR_FILE
    return json.loads(p.read_text()) if p.exists() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Calibrate the anchored scale of a run's fine stages")
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", type=int, action="append", help="stage index (default: every stage from 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    stages = a.stage or sorted(int(p.name) for p in (Path(a.run) / "stages").iterdir()
                               if p.name.isdigit() and int(p.name) > 0)
    for k in stages:
        t0 = time.time()
        out = write_calibration(a.run, a.data, k)
        print(f"stage {k}: ratios {out['ratios']} (pooled {out['pooled']}) in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
