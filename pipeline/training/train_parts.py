"""The pieces training is built from: the LR schedule, the checkpointed counters, fixed validation
crops and their bits, the metric log, checkpoints, the export of the best stage, the accelerator
and the least-squares start.  ``pipeline/training/trainer.py`` (``StageTrainer``) puts them together and
``pipeline/training/train.py`` (``train_stage``, ``python -m pipeline.training``) is the entry point; the
choices they make are described there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import lstsq_init, save_stage
from pipeline.config import ConfigError, StrataConfig, uses_tier_below
from pipeline.corpus.batches import alignment_unit, model_inputs, model_x
from pipeline.corpus.dataset import StageCrops, split_tiers
from pipeline.errors import DatasetError
from pipeline.io import atomic_write_text, swap_dirs
from pipeline.run import (
    checkpoint_dir,
    list_checkpoints,
    logs_dir,
    metrics_path,
    read_metrics,
    stage_dir,
    stage_name,
)

logger = logging.getLogger("strata.train")

VALID_SEED = 977  # fixed validation crops
SCHEDULE_PROBE_STEPS = 20  # steps timed before a run says how many steps its wall-clock budget allows


# ----------------------------------------------------------------------------- small pieces


class WarmupCosine:
    """LR factor: linear warm-up to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainState:
    """Counters saved with every checkpoint (registered for checkpointing)."""

    step: int = 0
    best_valid_bits: float = float("inf")
    best_step: int = -1
    last_valid_bits: float = float("nan")
    last_valid_step: int = -1
    last_loss: float = float("nan")
    # the steps a wall-clock budget allows were reported (a checkpoint's name for it: runs before the schedule
    # stopped following the budget also fitted the cosine to them, and keep that length when resumed)
    schedule_fitted: bool = False

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def seed_of(*parts: int) -> int:
    """One 31-bit seed from several integers (stable across runs and processes)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0] >> 1)


# ----------------------------------------------------------------------------- checks


def check_stage(cfg: StrataConfig, k: int, manifest: dict, data_dir) -> None:
    """Clear errors for a stage the config or dataset cannot train."""
    if not 0 <= k < len(cfg.stages):
        raise ConfigError(f"stage {k}: the config has stages 0..{len(cfg.stages) - 1}")
    have = [int(r) for r in manifest.get("rates", [])]
    rate = cfg.stages[k].rate
    if rate not in have:
        raise DatasetError(f"{data_dir}: stage {k}'s tier ({rate} Hz) is not in the dataset (rates {have})")
    if k > 0 and uses_tier_below(cfg, k) and cfg.data.rates[k - 1] not in have:
        raise DatasetError(f"{data_dir}: stage {k}'s tier below ({cfg.data.rates[k - 1]} Hz) is not in the dataset")
    unit = alignment_unit(cfg, k)
    if cfg.stages[k].crop % unit:
        raise ConfigError(f"stages[{k}].crop={cfg.stages[k].crop} must be a multiple of {unit} "
                          f"(lcm of the rate factor and rate / roll_fps)")


# ----------------------------------------------------------------------------- logging


class MetricLog:
    """``metrics/stage<k>.jsonl`` (rewritten atomically) and TensorBoard, on the main process."""

    def __init__(self, run_dir: Path, k: int, active: bool, resume_step: int | None):
        self.path, self.name, self.active = metrics_path(run_dir, k), stage_name(k), active
        self.rows: list[dict] = []
        self.writer = None
        if not active:
            return
        if resume_step is not None:  # drop rows logged after the checkpoint we resume from
            self.rows = [r for r in read_metrics(run_dir, k) if r.get("step", 0) <= resume_step]
        # local: keeps tensorboard out of `import pipeline.training.train_parts` until this runs
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logs_dir(run_dir, k)),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        row = {"step": step, "time": time.time(), **{f"{self.name}/{n}": v for n, v in values.items()}}
        self.rows.append(row)
        for n, v in values.items():
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(f"{self.name}/{n}", v, step)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- checkpoints / export


def recover_run_folder(run_dir, k: int) -> list[str]:
    """What a killed writer of stage k left behind, put right (the caller holds the run's lock):
    an export swapped out but not yet replaced is put back; temporary and half-deleted folders go.
    Returns what was done, for the log."""
    done = []
    final = stage_dir(run_dir, k)
    parent = final.parent
    if parent.is_dir():
        olds = sorted(parent.glob(f".old-{k}-*"), key=lambda p: p.stat().st_mtime)
        if olds and not final.exists() and _complete_export(olds[-1]):
            os.replace(olds[-1], final)
            done.append(f"restored {final} from {olds[-1].name}")
        for junk in [*parent.glob(f".old-{k}-*"), *parent.glob(f".tmp-{k}-*")]:
            shutil.rmtree(junk, ignore_errors=True)
            done.append(f"removed {junk}")
    ckpts = checkpoint_dir(run_dir, k)
    if ckpts.is_dir():
        for junk in [*ckpts.glob(".tmp-step-*"), *ckpts.glob(".del-step-*")]:
            shutil.rmtree(junk, ignore_errors=True)
            done.append(f"removed {junk}")
    for line in done:
        logger.info(f"stage {k}: {line} (left by an interrupted run)")
    return done


def _complete_export(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "model.json").is_file()


def save_checkpoint(accelerator, run_dir: Path, k: int, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary folder, renamed to ``step-<n>``; keep the last ``keep``.

    An old checkpoint is renamed out of the ``step-<n>`` names before it is deleted, so a kill
    during the deletion never leaves a half-deleted folder that looks like a checkpoint."""
    d = checkpoint_dir(run_dir, k)
    final, tmp = d / f"step-{step}", d / f".tmp-step-{step}"
    if accelerator.is_main_process:
        d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(run_dir, k)[: -max(1, keep)]:
            _discard(old)
    accelerator.wait_for_everyone()
    return final


def _discard(folder: Path) -> None:
    """Rename a checkpoint out of the ``step-<n>`` names, then delete it."""
    gone = folder.parent / f".del-{folder.name}-{os.getpid()}"
    os.replace(folder, gone)
    shutil.rmtree(gone, ignore_errors=True)


def export_stage(model, ema, run_dir: Path, k: int, extra: dict) -> Path:
    """Save the EMA weights with ``models.save_stage`` into ``stages/<k>/`` (folder swapped in whole:
    an atomic exchange of the two folders where the kernel offers it, so ``stages/<k>`` is never
    missing nor half-written; otherwise two renames that ``recover_run_folder`` completes after a kill)."""

    final = stage_dir(run_dir, k)
    tmp = final.parent / f".tmp-{k}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with ema.applied(model):
        save_stage(model, tmp, extra=extra)
    swap_dirs(tmp, final, old=final.parent / f".old-{k}-{os.getpid()}")
    return final


# ----------------------------------------------------------------------------- validation


@torch.inference_mode()
def validation_bits(accelerator, model, ema, batches: list[dict], cfg, k: int, n_genres: int, context: int) -> float:
    """Bits per sample on fixed validation crops (EMA weights), shared over processes."""
    head = model.head
    P, p = accelerator.num_processes, accelerator.process_index
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # [bits, samples]
    model.eval()
    with ema.applied(model):
        for batch in batches[p::P]:
            cond = model_inputs(batch, cfg, k, n_genres, None, drop=False).to(accelerator.device)
            x = batch["x"].to(accelerator.device)  # (B, W)
            with accelerator.autocast():
                out = model(model_x(x, head, cfg.data.mu_bits), cond)
            bits = model.head.nll_bits(out, model_x(x, head, cfg.data.mu_bits))[:, context:]  # (B, crop)
            total[0] += bits.double().sum()
            total[1] += bits.numel()
    model.train()
    total = accelerator.reduce(total, "sum")
    return float(total[0] / total[1].clamp(min=1))


def validation_batches(data_dir, cfg, k: int, context: int, note, margin: int = 0,
                       manifest: dict | None = None) -> list[dict]:
    """Fixed seeded validation crops (valid split; the train split if valid has none that fit)."""

    s = cfg.stages[k]
    n = cfg.train.eval_batches * s.batch_size
    crops = {"context": context, "seed": VALID_SEED, "length": n, "margin": margin, "manifest": manifest}
    try:
        ds = StageCrops(data_dir, cfg, k, split="valid", **crops)
    except DatasetError as e:
        note(f"stage {k}: validating on training crops ({e})")
        ds = StageCrops(data_dir, cfg, k, split="train", **crops)
    loader = torch.utils.data.DataLoader(ds, batch_size=s.batch_size, shuffle=False)
    return list(loader)


# ----------------------------------------------------------------------------- accelerator, warm start


def make_accelerator(cfg: StrataConfig):
    """The Accelerator of one ``train_stage`` call (state reset: several calls in one process)."""
    # local: keeps accelerate out of `import pipeline.training.train_parts` until this runs
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    mp = cfg.train.mixed_precision
    if mp != "no" and not torch.cuda.is_available():
        mp = "no"  # CPU: full precision (the caller logs a note)
    AcceleratorState._reset_state()  # several train_stage calls in one process (tests, flows)
    GradientState._reset_state()
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # needed for several CPU processes (gloo)
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.train.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def warm_start_linear(model, data_dir: Path, manifest: dict, cfg: StrataConfig, k: int, seed: int) -> dict:
    """LPCNet-style start: fit the stage's linear-prediction path by least squares on the training
    split and zero the network's output logits, so training begins at the linear predictor's
    distribution and the network learns what linear prediction misses.  The stage's
    ``linear_input_noise`` makes the fit robust to its own sampled past (``lstsq_init``)."""

    rates = cfg.data.rates
    xs = split_tiers(data_dir, manifest, "train", rates[k])
    below = split_tiers(data_dir, manifest, "train", rates[k - 1]) if k > 0 else None
    fit = lstsq_init(model, xs, below, max_rows=200_000, seed=seed, input_noise=cfg.stages[k].linear_input_noise)
    with torch.no_grad():  # network logits start at zero: the output is the linear path's distribution
        model.out2.weight.zero_()
        model.out2.bias.zero_()
    return fit
