"""Held-out cost of sampling with bf16, int8 or int4 weights (issue 22): bits per sample of every stage.

For a trained run, each stage's held-out bits per sample on the test split (the first
``--max-seconds`` s of each track) with its per-sample matrices in float32, bf16, int8 and int4
(``models/quant.py``; post-training: the run's config with ``stages[k].weights`` set, loaded by
``pipeline.run.load_run`` as generation loads it), and the cost of each format against float32.
The stages' bits come from ``pipeline.evaluation.evaluate.RunEvaluation`` (the same scoring as
``strata evaluate``) without its baselines and score tier, which do not depend on the format.

    python bench/quant_cost.py --data demo_final/data --run demo_final/run_in1 --json bench/results/quant_cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from models.quant import WEIGHT_FORMATS, stage_weights  # noqa: E402
from pipeline.config import config_from_dict, config_to_dict, save_config  # noqa: E402
from pipeline.corpus.dataset import iter_tracks  # noqa: E402
from pipeline.evaluation.evaluate import RunEvaluation  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import read_config  # noqa: E402

TARGET_BITS = 0.05  # issue 22: at most this cost per sample on every stage


class StageBits(RunEvaluation):
    """``RunEvaluation`` reduced to the stages' own bits (no baselines, no score tier)."""

    def jobs(self):
        for k in self.order:
            for i, item in enumerate(iter_tracks(self.data_dir, self.cfg, k, self.split, self.manifest)):
                yield lambda k=k, i=i, item=item: self.neural(k, i, item)

    def stage_row(self, k: int) -> dict:
        self.linear.setdefault(k, {"bits_per_sample": None})
        return super().stage_row(k)


def run_with_weights(run: Path, fmt: str, root: Path) -> Path:
    """A view of ``run`` (its entries linked) whose config says ``weights: fmt`` for every stage."""
    view = root / fmt
    view.mkdir(parents=True)
    for entry in run.iterdir():
        if entry.name != "config.yaml":
            (view / entry.name).symlink_to(entry.resolve())
    raw = config_to_dict(read_config(run))
    for s in raw["stages"]:
        s["weights"] = fmt
    save_config(config_from_dict(raw), view / "config.yaml")
    return view


def stage_bits(data: Path, run: Path, max_seconds: float, workers: int) -> dict:
    ev = StageBits(data, run, "test", max_seconds, None, 200_000, workers, False)
    formats = {k: stage_weights(st) for k, st in ev.stages.items()}
    t0 = time.perf_counter()
    res = ev.run()
    return {"stages": {str(r["index"]): {"bits_per_sample": r["bits_per_sample"], "samples": r["samples"],
                                         "weights": formats[r["index"]]} for r in res["stages"]},
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the prepared data folder")
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder")
    ap.add_argument("--max-seconds", type=float, default=15.0, help="seconds scored of each test track")
    ap.add_argument("--workers", type=int, default=1, help="evaluation threads (default 1: a shared machine)")
    ap.add_argument("--formats", nargs="+", default=list(WEIGHT_FORMATS), choices=WEIGHT_FORMATS)
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    formats = ["float32"] + [f for f in args.formats if f != "float32"]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            runs[fmt] = stage_bits(args.data, run_with_weights(args.run, fmt, Path(tmp)), args.max_seconds,
                                   args.workers)
            print(f"{fmt}: " + ", ".join(f"stage {k} {v['bits_per_sample']:.4f}"
                                         for k, v in runs[fmt]["stages"].items()) + f" ({runs[fmt]['wall_seconds']} s)")
    cfg = read_config(args.run)
    rows = []
    for k, base in runs["float32"]["stages"].items():
        row = {"stage": int(k), "rate": cfg.stages[int(k)].rate, "samples": base["samples"],
               "float32_bits_per_sample": round(base["bits_per_sample"], 5)}
        for fmt in formats[1:]:
            got = runs[fmt]["stages"][k]
            assert got["weights"] == fmt, (k, got)
            row[f"{fmt}_bits_per_sample"] = round(got["bits_per_sample"], 5)
            row[f"{fmt}_cost_bits"] = round(got["bits_per_sample"] - base["bits_per_sample"], 5)
        rows.append(row)
    worst = {fmt: max(r[f"{fmt}_cost_bits"] for r in rows) for fmt in formats[1:]}
    report = {
        "machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]),
        "data": str(args.data), "run": str(args.run), "split": "test", "max_seconds": args.max_seconds,
        "stages": rows,
        "summary": {"target_bits": TARGET_BITS, **{f"{fmt}_worst_cost_bits": v for fmt, v in worst.items()},
                    **{f"{fmt}_within_target": v <= TARGET_BITS for fmt, v in worst.items()}},
        "wall_seconds": {fmt: r["wall_seconds"] for fmt, r in runs.items()},
    }
    for r in rows:
        print(f"stage {r['stage']} ({r['rate']} Hz): float32 {r['float32_bits_per_sample']:.4f}"
              + "".join(f", {fmt} {r[f'{fmt}_bits_per_sample']:.4f} ({r[f'{fmt}_cost_bits']:+.4f})"
                        for fmt in formats[1:]))
    print(json.dumps(report["summary"]))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
