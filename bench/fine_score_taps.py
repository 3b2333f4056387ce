"""How much of a fine stage's linear residual the score taps predict (issue 21's "score taps in every stage").

For each fine stage of a run's config: fit its linear path (own past + tier below) by least squares on
the training split (``models.predictor.lstsq_init``, as training starts), take the residual
``e = dec(x) - mu_lin`` on the validation split, and predict it from its own past with the score taps of
the roll (``models.score.ScoreTaps``) at several orders.  Reports, where notes sound, the best single
gain, the residual variance left, and the bits that saves (0.5 log2 of the variance ratio: a Gaussian
or logistic residual's entropy drops by that much).  No training: a ceiling for the fixed taps alone.

    python bench/fine_score_taps.py --data demo_final/data --run demo_final/run \
        --json docs/results/fine_score_taps.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from models.predictor import lstsq_init  # noqa: E402
from models.score import ScoreTaps  # noqa: E402
from models.wavenet import build_stage  # noqa: E402
from pipeline.corpus.dataset import iter_tracks, load_manifest, split_tiers  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import read_config  # noqa: E402


def residual_gain(data: Path, cfg, manifest: dict, index: int, orders: list[int], seconds: float) -> dict:
    """One fine stage: {order: {"gain", "variance_ratio", "bits_saved"}} where notes sound."""
    st = build_stage(cfg, index, len(manifest["genres"])).eval()
    rate, below_rate = cfg.stages[index].rate, cfg.data.rates[index - 1]
    fit = lstsq_init(st, split_tiers(data, manifest, "train", rate, seconds),
                     split_tiers(data, manifest, "train", below_rate, seconds))
    lin, fps = st.linear, cfg.data.roll_fps
    pairs: dict[int, list] = {q: [] for q in orders}
    tracks = 0
    for item in iter_tracks(data, cfg, index, "valid", manifest):
        if not item["has_roll"]:
            continue
        n = min(item["x"].shape[0], int(seconds * rate))
        x = item["x"][None, :n]
        below, roll = item["below"][None, :n // st.factor], item["roll"][None, :, :n * fps // rate]
        with torch.no_grad():
            u = lin.decode(st.shift(x))
            mu = lin.predict(u, below, None).double() + st.lin_out.bias[0].double()
            e = lin.decode(x).double() - mu  # (1, T)
            for q in orders:
                taps, on = ScoreTaps(q, rate, fps, cfg.stages[index].score.bandwidth_hz).sample_taps(
                    roll, None, 0, n, 1, torch.float64)
                pred = ScoreTaps.apply(st.shift_values(e), taps)
                m = on > 0
                pairs[q].append((e[m].numpy(), pred[m].numpy()))
        tracks += 1
    out = {"rate": rate, "linear_rmse": fit["rmse"], "valid_tracks": tracks, "orders": {}}
    for q, v in pairs.items():
        e = np.concatenate([a for a, _ in v])
        p = np.concatenate([b for _, b in v])
        gain = float(e @ p / max(p @ p, 1e-30))
        ratio = float((e - gain * p).var() / e.var())
        out["orders"][str(q)] = {"gain": round(gain, 3), "variance_ratio": round(ratio, 3),
                                 "bits_saved": round(0.5 * float(np.log2(1 / ratio)), 3), "samples": int(e.size)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True, help="its config.yaml gives the stages")
    ap.add_argument("--json", required=True)
    ap.add_argument("--orders", default="32,64,128,256")
    ap.add_argument("--seconds", type=float, default=20.0, help="per track")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    data = Path(a.data)
    cfg, manifest = read_config(Path(a.run)), load_manifest(data)
    orders = [int(q) for q in a.orders.split(",")]
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "seconds_per_track": a.seconds,
           "stages": {str(k): residual_gain(data, cfg, manifest, k, orders, a.seconds)
                      for k in range(1, len(cfg.stages))}}
    out["wall_seconds"] = round(time.time() - t0, 1)
    atomic_write_json(a.json, out)
    for k, s in out["stages"].items():
        print(f"stage {k} ({s['rate']} Hz):", {q: r["bits_saved"] for q, r in s["orders"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
