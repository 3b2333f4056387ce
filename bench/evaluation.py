"""Evaluation speed: wall time of ``pipeline.evaluation.evaluate.evaluate_run`` (every stage with its
ablation rows, the linear baselines, the fine-tier baselines) against the seconds of held-out
audio it scores.  Goal: at least 2x faster than real time on 2 cores for the tiny preset.  ``cpu_seconds`` (all
threads of the process) tells the work apart from the machine's load: on 2 idle cores the wall
time of 2 workers is about half of it.

The run folder holds untrained stages of the config (evaluation costs the same whatever the
weights); the dataset is ``--data`` (e.g. the preprocessed demo corpus) or a synthetic one
(periodic audio with random-note rolls).

    .venv/bin/python bench/evaluation.py [--json FILE] [--config tiny] [--data DIR] [--workers 1,2]
                                         [--max-seconds S] [--repeats 3]

Each row (one per worker count) is the median of ``--repeats`` runs.  ``make bench`` runs
``--data demo/data --workers 2 --repeats 3`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, median, run_info  # noqa: E402  (bench/machine.py)
from models import build_stage, save_stage  # noqa: E402
from pipeline.config import load_config, save_config  # noqa: E402
from pipeline.corpus.dataset import load_manifest  # noqa: E402
from pipeline.evaluation.evaluate import evaluate_run  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from tests.helpers_data import make_dataset  # noqa: E402


def synthetic_dataset(root: Path, cfg) -> Path:
    """4 test tracks of 20 s (80 s of held-out audio) and a small training split for the baselines."""
    return make_dataset(root, "periodic", rates=cfg.data.rates, seconds=20.0, roll="notes",
                        splits={"train": 2, "valid": 1, "test": 4})


def untrained_run(root: Path, cfg, data: Path) -> Path:
    """A run folder with the config's stages, freshly initialised (seeded)."""
    genres = load_manifest(data)["genres"]
    save_config(cfg, root / "config.yaml")
    for k in range(len(cfg.stages)):
        torch.manual_seed(k)
        save_stage(build_stage(cfg, k, len(genres)).eval(), root / "stages" / str(k), extra={"genres": genres})
    return root


def run(data: Path, run_dir: Path, workers: int, max_seconds: float | None) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_run(data, run_dir, split="test", max_seconds_per_track=max_seconds, workers=workers,
                       progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    audio = float(res["seconds"])
    t = res["timings"]
    return {
        "workers": workers, "max_seconds": max_seconds, "tracks": res["tracks"], "audio_seconds": round(audio, 2),
        "wall_seconds": round(wall, 2), "real_time_factor": round(wall / audio, 4),
        "times_real_time": round(audio / wall, 2),
        "cpu_seconds": round(cpu, 2), "cpu_seconds_per_audio_second": round(cpu / audio, 4),
        "stages": [{"stage": s["index"], "samples": s["samples"], "work_seconds": t.get(f"stage{s['index']}/neural_s"),
                    "linear_baseline_seconds": t.get(f"stage{s['index']}/linear_s")} for s in res["stages"]],
        "fine_baselines_seconds": t.get("baselines_s"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--data", type=Path, help="dataset folder (default: a synthetic one)")
    ap.add_argument("--workers", default="2,1", help="comma-separated worker counts, one row each")
    ap.add_argument("--max-seconds", type=float, default=None, help="score the first S s of each track")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row; the row is the median run")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    rows = []
    with tempfile.TemporaryDirectory(prefix="strata-bench-eval-") as tmp:
        data = a.data or synthetic_dataset(Path(tmp) / "data", cfg)
        run_dir = untrained_run(Path(tmp) / "run", cfg, data)
        for w in (int(x) for x in a.workers.split(",")):
            runs = [run(data, run_dir, w, a.max_seconds) for _ in range(a.repeats)]
            walls = [x["wall_seconds"] for x in runs]
            r = min(runs, key=lambda x: abs(x["wall_seconds"] - median(walls)))  # the median run (odd repeats)
            rows.append({**r, "walls": walls})
            print(f"workers {r['workers']}: {r['audio_seconds']:.1f} s of audio in {r['wall_seconds']:.1f} s "
                  f"= {r['times_real_time']:.2f}x real time", flush=True)
    out = {
        "machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]), "repeats": a.repeats,
        "config": a.config, "dataset": str(a.data) if a.data else "synthetic",
        "results": rows,
    }
    if a.json:
        atomic_write_json(a.json, out)
        print(f"results: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
