"""What a run's training reached, per stage and for the score tier, as a committed result.

    python bench/training_summary.py --run demo/run --json docs/results/training.json

Reads ``RUN/metrics/<name>_result.json`` (written by ``strata train``) and keeps what a reader needs:
steps, best and final validation bits (per sample; per event for the score tier), the best step, the wall
time, what stopped it and the speed, and the learning-rate schedule it trained on (``schedule``: the cosine's
length, the learning rate at its last step as a share of the peak; read from ``RUN/metrics``); with the commit,
the command, the machine; beside the JSON the run's config (copied) and its loss curves (drawn from its metrics by
``flows.train.plot_losses``), named after it (``training.json``: ``training_config.yaml``, ``training_loss.png``;
``X.json``: ``X_config.yaml``, ``X_loss.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import SCORE_KEY, config_path, read_config, read_metrics, result_path  # noqa: E402

KEEP = ("steps", "best_valid_bits", "best_step", "final_valid_bits", "final_loss", "seconds", "stopped",
        "samples_per_second", "processes")


def schedule(run: Path, cfg, k) -> dict:
    """The cosine a stage trained on: its length (``schedule_steps`` in runs from before the schedule kept the
    configured steps: shorter than the configured ``max_steps`` where a budget bound; else the configured steps),
    the steps its budget allowed where the run said so, and the learning rate at the last logged step as a share
    of the peak."""
    rows = read_metrics(run, k)
    name = "score" if k == SCORE_KEY else f"stage{k}"
    peak = cfg.score_tier.lr if k == SCORE_KEY else cfg.train.lr
    configured = cfg.score_tier.max_steps if k == SCORE_KEY else cfg.stages[k].max_steps
    fitted = [r[f"{name}/schedule_steps"] for r in rows if f"{name}/schedule_steps" in r]
    allowed = [r[f"{name}/budget_steps"] for r in rows if f"{name}/budget_steps" in r]
    lrs = [(r["step"], r[f"{name}/lr"]) for r in rows if f"{name}/lr" in r]
    cosine = int(fitted[-1]) if fitted else int(configured)
    return {"cosine_steps": cosine, "fitted_to_budget": cosine < configured,
            "budget_steps": int(allowed[-1]) if allowed else None,
            "last_lr_step": lrs[-1][0] if lrs else None,
            "last_lr_share": round(lrs[-1][1] / peak, 4) if lrs else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    cfg = read_config(a.run)
    rows = {}
    for k in [SCORE_KEY, *range(len(cfg.stages))]:
        path = result_path(a.run, k)
        if path.is_file():
            r = json.loads(path.read_text())
            rows[str(k)] = {key: r.get(key) for key in KEEP}
            rows[str(k)]["unit"] = "bits per event" if k == SCORE_KEY else "bits per sample"
            rows[str(k)]["schedule"] = schedule(a.run, cfg, k)
    atomic_write_json(a.json, {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(),
                               "max_minutes": cfg.train.max_minutes, "stages": rows})
    shutil.copyfile(config_path(a.run), a.json.parent / f"{a.json.stem}_config.yaml")  # one pair per JSON
    if rows:  # drawn from the run's metrics: a stage retrained by `python -m pipeline.training` leaves the train
        # flow's metrics/loss.png as it was, so a copy of it would show the curves of the stages it replaced
        from flows.train import plot_losses

        plot_losses(a.run, [k if k == SCORE_KEY else int(k) for k in rows], a.json.parent / f"{a.json.stem}_loss.png")
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
