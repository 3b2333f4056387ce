"""Training one stage of the cascade with teacher forcing, under Hugging Face Accelerate.

The same code runs on one CPU, one GPU, several GPUs and machines (``accelerate launch``).

Writes into the run folder laid out by ``pipeline.run``: the best stage by validation bits (EMA
weights) in ``stages/<k>/``, ``accelerator.save_state`` checkpoints (written to a temporary folder
and renamed), TensorBoard logs, metric rows and the summary ``train_stage`` returns.

Choices worth knowing:

- The LR schedule (linear warm-up, cosine to ``min_lr_ratio``) spans the stage's configured
  ``max_steps``; the ``max_steps`` argument only says where to stop.  So a run stopped early and
  resumed follows exactly the same curve as one run to the end.  A wall-clock budget
  (``max_minutes``) that binds first stops the run where it stands and does not reshape the cosine
  (after ``SCHEDULE_PROBE_STEPS`` steps the run says how many steps the budget allows at the
  measured speed): step k trains the same on any machine, and a short budget does not anneal early
  (measured: README, "A budget stops training").  Runs that fitted the cosine to their budget keep that
  length when resumed (it is saved with the scheduler).
- Validation runs at step 0 too (the least-squares start), so the curves show whether training
  improves on it; the exported stage is always the best validated one, the start included.
- Every random choice is a pure function of (seed, stage, process, index): crops come from the
  index-seeded ``StageCrops`` and conditioning-dropout masks from a generator seeded per
  micro-batch.  Resuming skips to the step's index and is exact.
- End of piece (stages with ``end_class``): each example is, with probability ``END_PROB``
  (``pipeline.corpus.batches``), the
  last ``context + crop`` samples of a training track; every batch then carries one extra
  position: ``x = [crop..., END]`` for such an example (END is the last target and never an
  input, since output t predicts x[t] from x[<t]), and ``[crop..., silence]`` with a zero loss
  weight for the others.  ``below`` and ``roll`` keep their lengths.
- Loss: mean NLL in bits over the crop (the ``context`` on the left, the receptive field of the
  main stack or of the linear path, whichever is longer, is input only).
- Right margin: ``below`` and ``roll`` reach the stage's lookahead (rounded up to the alignment
  unit) past the crop, so its last positions see them as evaluation and generation do; past a
  track's real end they are missing (``cond_len``, see pipeline/corpus/dataset.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from pipeline.config import StrataConfig
from pipeline.errors import StrataError
from pipeline.lock import die_with_parent, folder_lock
from pipeline.run import SCORE_KEY, resolve_config
from pipeline.training.score_tier import train_score_tier
from pipeline.training.train_parts import recover_run_folder
from pipeline.training.trainer import StageTrainer


def train_stage(data_dir, run_dir, cfg: StrataConfig, stage: int | str, max_steps: int | None = None,
                max_minutes: float | None = None, resume: bool = False, progress: bool = True,
                extra_scores: str | None = None) -> dict:
    """Train stage ``stage`` on ``data_dir`` into ``run_dir``; returns a summary dict.

    ``max_steps``: stop after this many optimizer steps (default: the stage's ``max_steps``; the
    LR schedule always spans the stage's ``max_steps``).  ``max_minutes``: wall-clock budget
    (stops cleanly: checkpoint, validation, export).  ``resume``: continue exactly from the latest
    checkpoint.  Result: {"stage", "steps", "best_valid_bits", "best_step", "final_valid_bits",
    "final_loss", "samples_per_second", "data_wait_share", "seconds", "stopped", "export", "checkpoint"}.
    ``stage="score"`` trains the score tier (``pipeline.training.score_tier``; bits per event, ``extra_scores``:
    a folder of MIDI files in genre folders it also learns from).
    """
    if stage == SCORE_KEY:
        return train_score_tier(data_dir, run_dir, cfg, max_steps, max_minutes, resume, progress, extra_scores)
    with folder_lock(run_dir, "strata train"):  # one writer per run folder (re-entrant for the flow's own)
        recover_run_folder(run_dir, stage)
        return StageTrainer(data_dir, run_dir, cfg, stage, max_steps, max_minutes, resume, progress).setup().run()


# ----------------------------------------------------------------------------- script entry


def _stage_arg(value: str) -> int | str:
    return SCORE_KEY if value == SCORE_KEY else int(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.training --data D --run R --stage k [--config F] [--max-steps N] [--resume]``."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.training", description="Train one stage of a Strata cascade.")
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", type=_stage_arg, required=True, help="a stage index, or 'score' (the score tier)")
    ap.add_argument("--extra-scores", help="the score tier also learns from DIR/<genre>/*.mid")
    ap.add_argument("--config")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if os.environ.get("STRATA_HELD_LOCKS") or "LOCAL_RANK" in os.environ:

        die_with_parent()  # a stage process of a `strata train`: never an orphan writer after a kill -9
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # share the cores between the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        cfg = resolve_config(a.config, Path(a.run))
        result = train_stage(a.data, a.run, cfg, a.stage, max_steps=a.max_steps, max_minutes=a.max_minutes,
                             resume=a.resume, progress=not a.no_progress, extra_scores=a.extra_scores)
    except StrataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        unit = "event" if result["stage"] == SCORE_KEY else "sample"
        print(f"stage {result['stage']}: {result['steps']} steps, best valid {result['best_valid_bits']:.3f} "
              f"bits/{unit} -> {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
