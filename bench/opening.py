"""How a piece opens: stage 0 trained with and without opening crops (stage config ``opening_share``).

A generated piece starts from nothing; random training crops never score that state.  For each ``--run``
(runs that differ in stage 0's ``opening_share``, the same steps otherwise):

- stage 0's held-out bits per sample on the test split: over each track's first ``--opening-seconds``
  (the opening, from nothing) and over its first ``--max-seconds``; on the demo's test audio and on the
  same pieces rendered with ``--other-font`` (audio of another kind);
- 8 s pieces with the run's own sampling (``bench/fine_sampling.py``'s pieces and measures): the opening
  level (first 50 / 50-150 / 150-300 ms against 0.5-1.5 s) beside real openings, pieces whose first
  1 s window is noisy, noise, bands and the genre a classifier of real clips hears.

    python bench/opening.py --data demo_final/data --run demo_final/run_op0 --run demo_final/run_op1 \
        --json docs/results/opening.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from quality import OTHER_FONT  # noqa: E402


def stage0_only(run: Path) -> Path:
    """A view of ``run`` with stage 0 alone (its config and exported stage 0, linked): what is evaluated."""
    import os
    import shutil

    view = run / "opening" / "stage0_only"
    (view / "stages").mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.yaml", view / "config.yaml")
    if not (view / "stages" / "0").exists():
        os.symlink((run / "stages" / "0").resolve(), view / "stages" / "0")
    return view


def stage0_bits(data: Path, run: Path, seconds: float) -> dict:
    """Stage 0's held-out bits on the test split's first ``seconds`` of each track, beside its linear baseline."""
    from pipeline.evaluation.evaluate import evaluate_run

    s = next(s for s in evaluate_run(data, stage0_only(run), "test", seconds, progress=False)["stages"]
             if s["index"] == 0)
    return {"bits_per_sample": round(s["bits_per_sample"], 4),
            "linear_baseline": round(s["linear_baseline_bits_per_sample"], 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", action="append", required=True, help="a run folder (repeat to compare)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--per-genre", type=int, default=3)
    ap.add_argument("--opening-seconds", type=float, default=0.5)
    ap.add_argument("--max-seconds", type=float, default=15.0)
    ap.add_argument("--other-font", default=OTHER_FONT, help="'' to leave it out")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    from fine_sampling import classifier, parse_setting, pieces, recognised, references, summary
    from pipeline.run import read_config
    from quality import other_font_dataset

    data = Path(a.data)
    runs = [Path(r) for r in a.run]
    for run in runs:  # every run's config before any work
        read_config(run)
    work = runs[0] / "opening"
    refs = references(data, work)
    model, genres, real = classifier(data)
    font = a.other_font if a.other_font and Path(a.other_font).is_file() else None
    other = other_font_dataset(data, runs[0], font, work) if font else None
    out_runs = {}
    for run in runs:
        cfg = read_config(run)
        corpora = {"demo test split": data, **({f"other soundfont ({Path(font).name})": other} if other else {})}
        bits = {name: {"opening": stage0_bits(d, run, a.opening_seconds),
                       "first_seconds": stage0_bits(d, run, a.max_seconds)} for name, d in corpora.items()}
        rows = pieces(data, run, run / "opening_pieces", parse_setting("run:-:-"), a.per_genre, refs)
        out_runs[run.name] = {"run": str(run), "opening_share": cfg.stages[0].opening_share,
                              "stage0_steps": json.loads((run / "stages/0/model.json").read_text())["extra"]["step"],
                              "stage0_bits": bits,
                              "pieces": [{k: v for k, v in r.items() if k != "folder"} for r in rows],
                              "summary": summary(rows, recognised(rows, model, genres))}
        print(run.name, json.dumps({"bits": bits, "summary": out_runs[run.name]["summary"]}), flush=True)
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(),
           "opening_seconds": a.opening_seconds, "max_seconds": a.max_seconds,
           "references": {"opening_db_median": refs["opening_db_median"],
                          "opening_windows_seconds": refs["opening_windows_seconds"]},
           "genre_classifier": {"genres": genres, "real_test": real}, "runs": out_runs,
           "wall_seconds": round(time.time() - t0, 1)}
    from pipeline.io import atomic_write_json

    atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
