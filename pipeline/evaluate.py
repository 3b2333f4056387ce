"""Held-out evaluation of a run (DESIGN 6): exact bits per sample per stage, ablations, baselines.

Every sample of every held-out track is scored with its full left context in one teacher-forced
pass per track (long tracks in chunks whose overlap covers the receptive fields, so the result
is the same as one pass).  The conditioning ablations ride in the same pass as extra batch rows:

- row 0, the stage as trained: genre, tier below, roll (a track without roll: roll dropped);
- row 1, without conditioning: "no genre" id, ``drop_below`` and ``drop_roll`` all True, the way
  conditioning dropout removes them in training (never zeros);
- row 2 (stages with a history stack), short context: full conditioning, ``drop_history`` True.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.config import StrataConfig, load_config, stage_factor
from pipeline.errors import RunError

DEFAULT_CHUNK = 1 << 17  # stage samples scored per pass for long tracks


def _align(cfg: StrataConfig, k: int, stage) -> int:
    """Chunk starts are multiples of lcm(f, rate / roll_fps, history pool)."""
    unit = math.lcm(stage_factor(cfg, k), cfg.stages[k].rate // cfg.data.roll_fps)
    if stage.history is not None:
        unit = math.lcm(unit, stage.history.pool)
    return unit


def _window(item: dict, a: int, b: int, f: int, hop: int) -> dict:
    """Samples [a, b) of a whole-track item (a, b multiples of f and hop)."""
    out = {"x": item["x"][a:b], "genre": item["genre"], "has_roll": item["has_roll"]}
    if "below" in item:
        out["below"] = item["below"][a // f : b // f]
    out["roll"] = item["roll"][:, a // hop : b // hop]
    return out


def _rows(stage, item: dict, n_genres: int, variants: list[str]) -> dict:
    """Batch the variants of one window: keyword arguments for ``stage(x, **kw)``, B = len(variants).

    "full": as trained; "uncond": no genre, tier below and roll dropped from every part (the linear
    path on its fallback taps); "uncond_network": the same for the network only (the linear path
    keeps the tier below); "uncond_linear": only the linear path without the tier below (fallback
    taps, the network fully conditioned); "short": the history stack cut off.
    """
    B = len(variants)
    net = torch.tensor([v in ("uncond", "uncond_network") for v in variants])  # (B,) network unconditioned
    kw: dict[str, Any] = {}
    genre = int(item["genre"])
    kw["genre"] = torch.where(net, n_genres, genre)
    if stage.use_below:
        kw["below"] = item["below"][None].expand(B, -1)  # (B, T // f)
        kw["drop_below"] = net
        kw["drop_below_linear"] = torch.tensor([v in ("uncond", "uncond_linear") for v in variants])
    if stage.use_roll:
        kw["roll"] = item["roll"][None].expand(B, -1, -1)  # (B, 256, F)
        kw["drop_roll"] = net | (not item["has_roll"])
    if stage.history is not None:
        kw["drop_history"] = torch.tensor([v == "short" for v in variants])
    return kw


def _stage_x(stage, x: torch.Tensor, bits: int) -> torch.Tensor:
    if stage.head_kind == "logistic_mixture":
        from pipeline.audio import mulaw_decode_torch

        return mulaw_decode_torch(x, bits)
    return x


@torch.inference_mode()
def score_track(stage, item: dict, cfg: StrataConfig, k: int, n_genres: int, variants: list[str],
                chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Bits of every sample of a whole track for each variant: (len(variants), n)."""
    n = item["x"].shape[0]
    f, hop = stage_factor(cfg, k), cfg.stages[k].rate // cfg.data.roll_fps
    unit = _align(cfg, k, stage)
    back = stage.receptive_field + stage.history_receptive_field + 4 * (stage.lookahead + unit)
    ahead = 2 * (stage.lookahead + unit)
    out = torch.empty(len(variants), n)
    s = 0
    while s < n:
        e = min(n, s + chunk)
        a = max(0, (s - back) // unit * unit)
        b = n if e + ahead >= n else -(-(e + ahead) // unit) * unit
        w = _window(item, a, b, f, hop)
        x = _stage_x(stage, w["x"][None].expand(len(variants), -1), cfg.data.mu_bits)  # (B, b - a)
        logits = stage(x, **_rows(stage, w, n_genres, variants))  # (B, C, b - a)
        bits = stage.head.nll_bits(logits, x)  # (B, b - a)
        out[:, s:e] = bits[:, s - a : e - a].float()
        s = e
    return out


def _crop_item(item: dict, cfg: StrataConfig, k: int, max_seconds: float | None) -> dict:
    if max_seconds is None:
        return item
    unit = math.lcm(stage_factor(cfg, k), cfg.stages[k].rate // cfg.data.roll_fps)
    n = int(max_seconds * cfg.stages[k].rate) // unit * unit
    if n >= item["x"].shape[0]:
        return item
    out = dict(item, **_window(item, 0, n, stage_factor(cfg, k), cfg.stages[k].rate // cfg.data.roll_fps))
    out["seconds"] = n / cfg.stages[k].rate
    return out


def evaluate_stage(stage, data_dir, cfg: StrataConfig, k: int, split: str, n_genres: int,
                   max_seconds: float | None = None, chunk: int = DEFAULT_CHUNK) -> dict:
    """Exact held-out bits per sample of stage k (+ ablations): a dict for the JSON's "stages"."""
    from pipeline.dataset import iter_tracks

    variants = ["full", "uncond"] + (["short"] if stage.history is not None else [])
    totals = torch.zeros(len(variants), dtype=torch.float64)
    n = tracks = 0
    seconds = 0.0
    for item in iter_tracks(data_dir, cfg, k, split):
        item = _crop_item(item, cfg, k, max_seconds)
        totals += score_track(stage, item, cfg, k, n_genres, variants, chunk).double().sum(dim=1)
        n += item["x"].shape[0]
        seconds += float(item["seconds"])
        tracks += 1
    per = (totals / max(n, 1)).tolist()
    res = {"index": k, "rate": cfg.stages[k].rate, "samples": n, "tracks": tracks, "seconds": seconds,
           "bits_per_sample": per[0], "bits_per_sample_without_conditioning": per[1]}
    if stage.history is not None:
        res["bits_per_sample_short_context"] = per[2]
    res["receptive_field"] = stage.receptive_field
    return res


def load_run_stages(run_dir: Path, cfg: StrataConfig) -> dict[int, Any]:
    """The exported stages of a run: {k: Stage} (RunError if none)."""
    from models import load_stage

    out = {}
    for k in range(len(cfg.stages)):
        folder = Path(run_dir) / "stages" / str(k)
        if (folder / "model.json").is_file():
            out[k] = load_stage(folder).eval()
    if not out:
        raise RunError(f"{run_dir}: no trained stage in stages/ (run strata train first)")
    return out


def evaluate_run(data_dir, run_dir, split: str = "test", max_seconds_per_track: float | None = None,
                 chunk: int = DEFAULT_CHUNK, baseline_rows: int = 200_000) -> dict:
    """The evaluation JSON of DESIGN 6 for the exported stages of ``run_dir`` on ``split``."""
    from pipeline.baselines import fine_tier_baselines, stage_linear_baseline
    from pipeline.dataset import load_manifest
    from pipeline.errors import ParameterError

    if split not in ("train", "valid", "test"):
        raise ParameterError(f"split {split!r}: expected train, valid or test")
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    manifest = load_manifest(data_dir)
    n_genres = len(manifest["genres"])
    stages = load_run_stages(run_dir, cfg)
    from pipeline.train import torch_threads

    torch.set_num_threads(torch_threads())
    timings: dict[str, float] = {}
    rows = []
    for k, stage in stages.items():
        t0 = time.perf_counter()
        res = evaluate_stage(stage, data_dir, cfg, k, split, n_genres, max_seconds_per_track, chunk)
        timings[f"stage{k}/neural_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lin = stage_linear_baseline(data_dir, manifest, cfg, k, split, max_rows=baseline_rows,
                                    max_seconds=max_seconds_per_track)
        timings[f"stage{k}/linear_s"] = time.perf_counter() - t0
        res["linear_baseline_bits_per_sample"] = lin["bits_per_sample"]
        extra = _export_extra(run_dir, k)
        res["valid_bits"], res["step"] = extra.get("valid_bits"), extra.get("step")
        rows.append(res)
    t0 = time.perf_counter()
    baselines = fine_tier_baselines(data_dir, manifest, cfg, split, max_rows=baseline_rows,
                                    max_seconds=max_seconds_per_track)
    timings["baselines_s"] = time.perf_counter() - t0
    complete = sorted(stages) == list(range(len(cfg.stages)))
    n_fine = rows[-1]["samples"]
    cascade = sum(r["bits_per_sample"] * r["samples"] for r in rows) / max(n_fine, 1) if complete else None
    return {
        "split": split,
        "tracks": rows[0]["tracks"],
        "seconds": rows[-1]["seconds"],
        "stages": rows,
        "cascade_bits_per_sample": cascade,
        "baselines": baselines,
        "max_seconds_per_track": max_seconds_per_track,
        "timings": timings,
    }


def _export_extra(run_dir: Path, k: int) -> dict:
    import json

    try:
        return json.loads((Path(run_dir) / "stages" / str(k) / "model.json").read_text()).get("extra", {}) or {}
    except (OSError, ValueError):
        return {}


def stages_table(result: dict) -> list[dict]:
    """Rows for a table artifact / printout."""
    out = []
    for r in result["stages"]:
        out.append({
            "stage": r["index"], "rate": r["rate"], "bits/sample": round(r["bits_per_sample"], 4),
            "without conditioning": round(r["bits_per_sample_without_conditioning"], 4),
            "short context": round(r["bits_per_sample_short_context"], 4) if "bits_per_sample_short_context" in r else None,
            "linear baseline": round(r["linear_baseline_bits_per_sample"], 4),
        })
    return out
