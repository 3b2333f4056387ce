"""Training one stage of the cascade with teacher forcing, under Hugging Face Accelerate.

The same code runs on one CPU, one GPU, several GPUs and machines (``accelerate launch``).

Writes into the run folder laid out by ``pipeline.run``: the best stage by validation bits (EMA
weights) in ``stages/<k>/``, ``accelerator.save_state`` checkpoints (written to a temporary folder
and renamed), TensorBoard logs, metric rows and the summary ``train_stage`` returns.

Choices worth knowing:

- The LR schedule (linear warm-up, cosine to ``min_lr_ratio``) spans the stage's configured
  ``max_steps``; the ``max_steps`` argument only says where to stop.  So a run stopped early and
  resumed follows exactly the same curve as one run to the end.  With a wall-clock budget
  (``max_minutes``) the budget usually binds first: after ``SCHEDULE_PROBE_STEPS`` steps the
  cosine is fitted, once, to the steps the budget will allow at the measured speed (never more
  than ``max_steps``); that length is saved with the scheduler, so a resumed run keeps it.
- Validation runs at step 0 too (the least-squares start), so the curves show whether training
  improves on it; the exported stage is always the best validated one, the start included.
- Every random choice is a pure function of (seed, stage, process, index): crops come from the
  index-seeded ``StageCrops`` and conditioning-dropout masks from a generator seeded per
  micro-batch.  Resuming skips to the step's index and is exact.
- End of piece (stages with ``end_class``): each example is, with probability ``END_PROB``
  (``pipeline.batches``), the
  last ``context + crop`` samples of a training track; every batch then carries one extra
  position: ``x = [crop..., END]`` for such an example (END is the last target and never an
  input, since output t predicts x[t] from x[<t]), and ``[crop..., silence]`` with a zero loss
  weight for the others.  ``below`` and ``roll`` keep their lengths.
- Loss: mean NLL in bits over the crop (the ``context`` on the left, the receptive field of the
  main stack or of the linear path, whichever is longer, is input only).
- Right margin: ``below`` and ``roll`` reach the stage's lookahead (rounded up to the alignment
  unit) past the crop, so its last positions see them as evaluation and generation do; past a
  track's real end they are missing (``cond_len``, see pipeline/dataset.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from models import Conditioning, build_stage  # build_stage: the one builder (callers import it from here too)
from pipeline.batches import (  # noqa: F401 - round_up: still imported from here by tests
    EndCrops,
    alignment_unit,
    crop_geometry,
    insert_end_crops,
    loss_weights,
    round_up,
)
from pipeline.config import ConfigError, StrataConfig, uses_tier_below
from pipeline.errors import DatasetError, StrataError
from pipeline.io import atomic_write_json, atomic_write_text
from pipeline.run import (
    check_checkpoints,
    check_run_config,
    checkpoint_dir,
    list_checkpoints,
    logs_dir,
    metrics_path,
    read_metrics,
    resolve_config,
    result_path,
    stage_dir,
)
from pipeline.runtime import Progress, torch_threads

logger = logging.getLogger("strata.train")

VALID_SEED = 977  # fixed validation crops
SCHEDULE_PROBE_STEPS = 20  # steps timed before a wall-clock budget fixes the cosine's length
SCHEDULE_SAFETY = 0.95  # share of the projected steps the cosine spans (end-of-run validation, noise)


# ----------------------------------------------------------------------------- small pieces


class WarmupCosine:
    """LR factor: linear warm-up to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def fit_to_budget(self, steps: int) -> None:
        """Span ``min(total, steps)`` steps instead (a wall-clock budget that binds first)."""
        self.total = max(self.warmup + 1, min(self.total, int(steps)))

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
    schedule_fitted: bool = False  # the cosine's length was fitted to a wall-clock budget

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


# ----------------------------------------------------------------------------- batches


def model_inputs(batch: dict, cfg: StrataConfig, k: int, n_genres: int, gen: torch.Generator | None,
                 drop: bool) -> Conditioning:
    """The ``Conditioning`` of ``stage(x, cond)``, dropout masks (``drop``) drawn from ``gen``."""
    s = cfg.stages[k]
    B = batch["x"].shape[0]

    def coin(p: float) -> torch.Tensor:  # (B,) bool
        if not drop or p <= 0:
            return torch.zeros(B, dtype=torch.bool)
        return torch.rand(B, generator=gen) < p

    kw: dict[str, Any] = {}
    genre = batch["genre"].long()  # (B,)
    if s.use_genre:
        kw["genre"] = torch.where(coin(s.genre_dropout), torch.full_like(genre, n_genres), genre)
    else:
        kw["genre"] = torch.full_like(genre, n_genres)
    if uses_tier_below(cfg, k):
        kw["below"] = batch["below"]  # (B, (T + margin) // f)
        kw["drop_below"] = coin(s.below_dropout)
    if s.use_roll:
        has_roll = torch.as_tensor(batch["has_roll"], dtype=torch.bool)
        kw["roll"] = batch["roll"]  # (B, 256, F)
        kw["drop_roll"] = coin(s.roll_dropout) | ~has_roll
    if ("below" in kw or "roll" in kw) and "cond_len" in batch:
        kw["cond_len"] = batch["cond_len"]  # (B,) below / roll past it: missing (a track's end)
    if s.history.enabled:
        kw["drop_history"] = coin(s.history_dropout)
    return Conditioning(**kw)


def model_x(x: torch.Tensor, head, bits: int) -> torch.Tensor:
    """Codes -> what the stage reads (the head decides: int64 codes, or float audio)."""
    return head.codes_to_input(x, bits)


# ----------------------------------------------------------------------------- logging


class MetricLog:
    """``metrics/stage<k>.jsonl`` (rewritten atomically) and TensorBoard, on the main process."""

    def __init__(self, run_dir: Path, k: int, active: bool, resume_step: int | None):
        self.path, self.k, self.active = metrics_path(run_dir, k), k, active
        self.rows: list[dict] = []
        self.writer = None
        if not active:
            return
        if resume_step is not None:  # drop rows logged after the checkpoint we resume from
            self.rows = [r for r in read_metrics(run_dir, k) if r.get("step", 0) <= resume_step]
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logs_dir(run_dir, k)),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        row = {"step": step, "time": time.time(), **{f"stage{self.k}/{n}": v for n, v in values.items()}}
        self.rows.append(row)
        for n, v in values.items():
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(f"stage{self.k}/{n}", v, step)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- checkpoints / export


def save_checkpoint(accelerator, run_dir: Path, k: int, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary folder, renamed to ``step-<n>``; keep the last ``keep``."""
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
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(run_dir, k)[: -max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def export_stage(model, ema, run_dir: Path, k: int, extra: dict) -> Path:
    """Save the EMA weights with ``models.save_stage`` into ``stages/<k>/`` (folder swapped in whole)."""
    from models import save_stage

    final = stage_dir(run_dir, k)
    tmp = final.parent / f".tmp-{k}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with ema.applied(model):
        save_stage(model, tmp, extra=extra)
    old = final.parent / f".old-{k}-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
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


def validation_batches(data_dir, cfg, k: int, context: int, note, margin: int = 0) -> list[dict]:
    """Fixed seeded validation crops (valid split; the train split if valid has none that fit)."""
    from pipeline.dataset import StageCrops

    s = cfg.stages[k]
    n = cfg.train.eval_batches * s.batch_size
    crops = {"context": context, "seed": VALID_SEED, "length": n, "margin": margin}
    try:
        ds = StageCrops(data_dir, cfg, k, split="valid", **crops)
    except DatasetError as e:
        note(f"stage {k}: validating on training crops ({e})")
        ds = StageCrops(data_dir, cfg, k, split="train", **crops)
    loader = torch.utils.data.DataLoader(ds, batch_size=s.batch_size, shuffle=False)
    return list(loader)


# ----------------------------------------------------------------------------- the training loop


def _accelerator(cfg: StrataConfig):
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
    distribution and the network learns what linear prediction misses."""
    from models import lstsq_init
    from pipeline.baselines import split_tiers

    rates = cfg.data.rates
    xs = split_tiers(data_dir, manifest, "train", rates[k])
    below = split_tiers(data_dir, manifest, "train", rates[k - 1]) if k > 0 else None
    fit = lstsq_init(model, xs, below, max_rows=200_000, seed=seed)
    with torch.no_grad():  # network logits start at zero: the output is the linear path's distribution
        model.out2.weight.zero_()
        model.out2.bias.zero_()
    return fit


def _batches(loader) -> Iterator[tuple[dict, float]]:
    """Yield (batch, seconds waited for it)."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            return
        yield b, time.perf_counter() - t0


def train_stage(data_dir, run_dir, cfg: StrataConfig, stage: int, max_steps: int | None = None,
                max_minutes: float | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train stage ``stage`` on ``data_dir`` into ``run_dir``; returns a summary dict.

    ``max_steps``: stop after this many optimizer steps (default: the stage's ``max_steps``; the
    LR schedule always spans the stage's ``max_steps``).  ``max_minutes``: wall-clock budget
    (stops cleanly: checkpoint, validation, export).  ``resume``: continue exactly from the latest
    checkpoint.  Result: {"stage", "steps", "best_valid_bits", "best_step", "final_valid_bits",
    "final_loss", "samples_per_second", "data_wait_share", "seconds", "stopped", "export", "checkpoint"}.
    """
    from accelerate.utils import set_seed

    from pipeline.dataset import StageCrops, load_manifest

    t_start = time.perf_counter()
    data_dir, run_dir, k = Path(data_dir), Path(run_dir), int(stage)
    accelerator = _accelerator(cfg)
    main = accelerator.is_main_process

    def note(msg: str) -> None:
        logger.info(msg)
        if main and progress:
            print(f"note: {msg}", file=sys.stderr, flush=True)

    if cfg.train.mixed_precision != "no" and accelerator.mixed_precision == "no":
        note(f"mixed_precision={cfg.train.mixed_precision} needs a GPU here: training in full precision on CPU")
    if accelerator.num_processes == 1:
        torch.set_num_threads(torch_threads())

    manifest = load_manifest(data_dir)
    check_stage(cfg, k, manifest, data_dir)
    check_checkpoints(run_dir, k, resume)
    check_run_config(run_dir, cfg, resume, write=False)
    accelerator.wait_for_everyone()
    if main:
        check_run_config(run_dir, cfg, resume, write=True)
        if not resume:  # a fresh start (no checkpoint): forget metrics of a run that died before one
            shutil.rmtree(logs_dir(run_dir, k), ignore_errors=True)
            metrics_path(run_dir, k).unlink(missing_ok=True)
    accelerator.wait_for_everyone()

    s, t = cfg.stages[k], cfg.train
    n_genres = len(manifest["genres"])
    set_seed(seed_of(t.seed, k))
    model = build_stage(cfg, k, n_genres)
    if not resume and getattr(model, "linear", None) is not None:
        fit = warm_start_linear(model, data_dir, manifest, cfg, k, seed_of(t.seed, k))
        note(f"stage {k}: linear path warm-started by least squares on {fit['rows']} rows "
             f"(rmse {fit['rmse']:.4f}, scale {fit['scale']:.4f})")
    geo = crop_geometry(cfg, k, model)
    context, margin, window = geo.context, geo.margin, geo.window  # margin: below / roll past the crop
    head = model.head
    end_code = model.end_code if getattr(model, "end_code", None) is not None else None

    from pipeline.ema import EMA

    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    cosine = WarmupCosine(t.warmup_steps, s.max_steps, t.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    state = TrainState()
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ema = EMA(unwrapped, t.ema_decay)  # shadow weights on the model's device
    for obj in (scheduler, ema, state):
        accelerator.register_for_checkpointing(obj)

    resume_step = None
    if resume:
        _, folder = list_checkpoints(run_dir, k)[-1]
        accelerator.load_state(str(folder))
        resume_step = state.step
        note(f"stage {k}: resumed from {folder} (step {state.step})")

    stop_at = int(max_steps if max_steps is not None else s.max_steps)
    budget_s = None if max_minutes is None else float(max_minutes) * 60.0
    log = MetricLog(run_dir, k, main, resume_step)
    bar = Progress(main and progress, every=0)
    label = bar.add(f"stage {k}", stop_at, unit="steps", start=state.step, deadline_s=budget_s)

    micro = s.batch_size
    per_step = micro * t.grad_accum  # items per optimizer step per process
    train_ds = StageCrops(data_dir, cfg, k, split="train", context=context,
                          seed=seed_of(t.seed, k, accelerator.process_index), length=10**12, margin=margin)
    start_item = state.step * per_step
    n_items = max(0, stop_at - state.step) * per_step
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=micro, sampler=range(start_item, start_item + n_items), drop_last=True,
        num_workers=t.num_workers, persistent_workers=False,
    )
    ends = EndCrops(data_dir, cfg, k, window, margin) if end_code is not None else None
    valid = validation_batches(data_dir, cfg, k, context, note, margin)
    extra_base = {"genres": list(manifest["genres"]), "rate": s.rate, "stage": k}

    def evaluate_and_export() -> None:
        bits = validation_bits(accelerator, unwrapped, ema, valid, cfg, k, n_genres, context)
        state.last_valid_bits, state.last_valid_step = bits, state.step
        log.log(state.step, {"valid_bits": bits})
        if bits < state.best_valid_bits or not stage_dir(run_dir, k).joinpath("model.json").exists():
            if bits < state.best_valid_bits:
                state.best_valid_bits, state.best_step = bits, state.step
            if main:
                export_stage(unwrapped, ema, run_dir, k, dict(extra_base, valid_bits=bits, step=state.step))
        accelerator.wait_for_everyone()

    if state.step == 0:  # the least-squares start, for the curves (and as the export to beat)
        evaluate_and_export()
    model.train()
    loop_t0, loop_step0 = time.perf_counter(), state.step
    stopped = "max_steps"
    acc_loss, acc_n, wait_s, busy_s, timed_samples, grad_norm = 0.0, 0, 0.0, 0.0, 0, float("nan")
    window_t0 = time.perf_counter()
    tot_wait, tot_busy, tot_samples = 0.0, 0.0, 0
    last_loss = state.last_loss
    micro_index = state.step * t.grad_accum
    for batch, waited in _batches(loader):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed_of(t.seed, k, accelerator.process_index, micro_index, 7))
        micro_index += 1
        if end_code is not None:
            batch = insert_end_crops(batch, ends, gen, end_code)
        B, T = batch["x"].shape
        weights = loss_weights(B, T, context, window, batch.get("end_mask")).to(accelerator.device)
        cond = model_inputs(batch, cfg, k, n_genres, gen, drop=True).to(accelerator.device)
        x = model_x(batch["x"].to(accelerator.device), head, cfg.data.mu_bits)  # (B, T)
        with accelerator.accumulate(model):
            out = model(x, cond)  # (B, C, T)
            bits = unwrapped.head.nll_bits(out, x)  # (B, T)
            loss = (bits * weights).sum() / weights.sum()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                clip = t.clip_grad_norm if t.clip_grad_norm and t.clip_grad_norm > 0 else float("inf")
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        acc_loss += float(loss.detach())
        acc_n += 1
        dt = time.perf_counter() - t0
        wait_s, busy_s = wait_s + waited, busy_s + dt
        timed_samples += B * s.crop * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        # ---- one optimizer step done
        scheduler.step()
        ema.update(unwrapped)
        state.step += 1
        last_loss = state.last_loss = acc_loss / acc_n
        acc_loss, acc_n = 0.0, 0
        if state.step % max(1, t.log_every) == 0 or state.step == stop_at:
            mean_loss = float(accelerator.reduce(torch.tensor([last_loss], device=accelerator.device), "mean")[0])
            elapsed = time.perf_counter() - window_t0
            sps = timed_samples / max(elapsed, 1e-9)
            share = wait_s / max(wait_s + busy_s, 1e-9)
            log.log(state.step, {"loss": mean_loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                                 "samples_per_second": sps, "data_wait_share": share})
            bar.update(label, state.step, info=f"loss {mean_loss:.3f} bits, {sps:,.0f} samples/s")
            tot_wait, tot_busy, tot_samples = tot_wait + wait_s, tot_busy + busy_s, tot_samples + timed_samples
            wait_s, busy_s, timed_samples, window_t0 = 0.0, 0.0, 0, time.perf_counter()
        if budget_s is not None and not state.schedule_fitted and state.step - loop_step0 >= SCHEDULE_PROBE_STEPS:
            per_step = (time.perf_counter() - loop_t0) / (state.step - loop_step0)
            left = budget_s - (time.perf_counter() - t_start)
            steps = _agree(accelerator, state.step + SCHEDULE_SAFETY * left / per_step)
            cosine.fit_to_budget(steps)
            state.schedule_fitted = True
            note(f"stage {k}: the wall-clock budget allows about {int(steps)} steps: the cosine spans "
                 f"{cosine.total}")
            log.log(state.step, {"schedule_steps": cosine.total})
        if state.step % max(1, t.eval_every) == 0:
            evaluate_and_export()
        if state.step % max(1, t.checkpoint_every) == 0:
            save_checkpoint(accelerator, run_dir, k, state.step, t.keep_checkpoints)
        if budget_s is not None and _over_budget(accelerator, time.perf_counter() - t_start, budget_s):
            stopped = "max_minutes"
            note(f"stage {k}: wall-clock budget of {max_minutes:g} min reached at step {state.step}")
            break
    tot_wait, tot_busy, tot_samples = tot_wait + wait_s, tot_busy + busy_s, tot_samples + timed_samples
    if timed_samples:  # the last steps were not logged yet: show the final line
        sps = tot_samples / max(tot_busy + tot_wait, 1e-9)
        bar.update(label, state.step, info=f"loss {last_loss:.3f} bits, {sps:,.0f} samples/s")

    # ---- the end: validate + export if not just done, checkpoint if not just done
    if state.last_valid_step != state.step or not stage_dir(run_dir, k).joinpath("model.json").exists():
        evaluate_and_export()
    ckpts = list_checkpoints(run_dir, k)
    if not ckpts or ckpts[-1][0] != state.step:
        save_checkpoint(accelerator, run_dir, k, state.step, t.keep_checkpoints)
    log.close()
    bar.close()
    result = {
        "stage": k,
        "steps": state.step,
        "best_valid_bits": state.best_valid_bits,
        "best_step": state.best_step,
        "final_valid_bits": state.last_valid_bits,
        "final_loss": last_loss,
        "samples_per_second": tot_samples / max(tot_busy + tot_wait, 1e-9),
        "data_wait_share": tot_wait / max(tot_wait + tot_busy, 1e-9),
        "seconds": time.perf_counter() - t_start,
        "stopped": stopped,
        "processes": accelerator.num_processes,
        "export": str(stage_dir(run_dir, k)),
        "checkpoint": str(list_checkpoints(run_dir, k)[-1][1]) if list_checkpoints(run_dir, k) else None,
    }
    if main:
        atomic_write_json(result_path(run_dir, k), result)
    accelerator.wait_for_everyone()
    return result


def _agree(accelerator, value: float) -> float:
    """The main process's ``value`` on every process (clocks differ; decisions must not)."""
    v = torch.tensor([float(value)], device=accelerator.device)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        v = broadcast(v, from_process=0)
    return float(v[0])


def _over_budget(accelerator, elapsed: float, budget: float) -> bool:
    """All processes agree on stopping (the main process's clock decides)."""
    return _agree(accelerator, 1.0 if elapsed > budget else 0.0) > 0


# ----------------------------------------------------------------------------- script entry


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.train --data D --run R --stage k [--config F] [--max-steps N] [--resume]``."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.train", description="Train one stage of a Strata cascade.")
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--config")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # share the cores between the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        cfg = resolve_config(a.config, Path(a.run))
        result = train_stage(a.data, a.run, cfg, a.stage, max_steps=a.max_steps, max_minutes=a.max_minutes,
                             resume=a.resume, progress=not a.no_progress)
    except StrataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"stage {result['stage']}: {result['steps']} steps, best valid {result['best_valid_bits']:.3f} "
              f"bits/sample -> {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
