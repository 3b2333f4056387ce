"""Training speed per stage: audio samples per second (crop positions trained on, all processes)
and the share of step time spent waiting for data (goal < 10 %).

Runs ``pipeline.training.train.train_stage`` for a few dozen steps per stage on a synthetic dataset (or
``--data``), with validation and checkpoints pushed to the end (outside the timed loop).

    .venv/bin/python bench/training.py [--json FILE] [--config tiny] [--data DIR] [--steps 30]
                                       [--threads N] [--repeats 3]

``--threads N`` sets ``STRATA_TORCH_THREADS`` (torch threads of the trainer; default: all cores).
Each stage's row is the median over ``--repeats`` runs.  ``make bench`` runs
``--data demo/data --steps 10 --threads 1``: one thread per stage, as the tiny preset trains
stages side by side on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, median, run_info  # noqa: E402  (bench/machine.py)
from pipeline.config import load_config  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from tests.helpers_data import make_dataset  # noqa: E402


def synthetic_dataset(root: Path, cfg) -> Path:
    """Periodic audio with random-note rolls at the config's rates, long enough for every crop."""
    need = max((s.crop + 4096) / s.rate for s in cfg.stages)  # seconds: crop + generous context
    return make_dataset(root, "periodic", rates=cfg.data.rates, seconds=max(4.0, 2 * need), roll="notes",
                        splits={"train": 6, "valid": 1})


def bench_config(cfg, steps: int):
    """No validation or checkpoint inside the timed steps; one log row at the end."""
    t = dataclasses.replace(cfg.train, eval_every=10**9, checkpoint_every=10**9, log_every=steps, eval_batches=1)
    return dataclasses.replace(cfg, train=t)


def run(data: Path, cfg, steps: int, stages: list[int]) -> list[dict]:
    # local: keeps accelerate out of the script's start-up (--help, bad arguments)
    from pipeline.training.train import train_stage

    rows = []
    with tempfile.TemporaryDirectory(prefix="strata-bench-train-") as tmp:
        for k in stages:
            t0 = time.perf_counter()
            res = train_stage(data, Path(tmp) / "run", cfg, k, max_steps=steps, progress=False)
            s = cfg.stages[k]
            rows.append({
                "stage": k, "rate": s.rate, "batch": s.batch_size, "crop": s.crop, "steps": res["steps"],
                "samples_per_second": round(res["samples_per_second"], 1),
                "data_wait_share": round(res["data_wait_share"], 4),
                "wall_seconds": round(time.perf_counter() - t0, 2),
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--data", type=Path, help="dataset folder (default: a synthetic one)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--stages", default="all")
    ap.add_argument("--threads", type=int, help="torch threads (STRATA_TORCH_THREADS; default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per stage; the row is their median")
    a = ap.parse_args(argv)
    if a.threads:
        os.environ["STRATA_TORCH_THREADS"] = str(a.threads)
    cfg = bench_config(load_config(a.config), a.steps)
    stages = list(range(len(cfg.stages))) if a.stages == "all" else [int(x) for x in a.stages.split(",")]
    with tempfile.TemporaryDirectory(prefix="strata-bench-data-") as tmp:
        data = a.data or synthetic_dataset(Path(tmp) / "data", cfg)
        runs = [run(data, cfg, a.steps, stages) for _ in range(a.repeats)]
    rows = []
    for i, first in enumerate(runs[0]):
        same = [r[i] for r in runs]
        rows.append({**first, **{key: round(median([r[key] for r in same]), 4 if key == "data_wait_share" else 2)
                                 for key in ("samples_per_second", "data_wait_share", "wall_seconds")},
                     "samples_per_second_runs": [r["samples_per_second"] for r in same]})
    out = {
        "machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]), "repeats": a.repeats,
        "config": a.config, "steps": a.steps, "dataset": str(a.data) if a.data else "synthetic",
        "results": rows,
    }
    print(f"{'stage':>5} {'rate':>6} {'batch':>5} {'crop':>5} {'samples/s':>11} {'data wait':>9}")
    for r in rows:
        print(f"{r['stage']:>5} {r['rate']:>6} {r['batch']:>5} {r['crop']:>5} {r['samples_per_second']:>11,.0f} "
              f"{100 * r['data_wait_share']:>8.1f}%")
    if a.json:
        atomic_write_json(a.json, out)
        print(f"results: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
