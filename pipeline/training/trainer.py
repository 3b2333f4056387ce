"""The training loop of one stage: ``StageTrainer`` (setup, step, validate, finish) and its speed meter.

``pipeline.training.train.train_stage`` is the entry point; the pieces it is built from (schedule, state,
checkpoints, export, validation, metric log) live in ``pipeline/training/train_parts.py``, the crops in
``pipeline/corpus/batches.py`` and the run-folder layout in ``pipeline/run.py``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from models import build_stage
from pipeline.config import StrataConfig
from pipeline.corpus.batches import (
    EndCrops,
    OpeningCrops,
    crop_geometry,
    insert_end_crops,
    insert_opening_crops,
    loss_weights,
    model_inputs,
    model_x,
    silence_context,
)
from pipeline.corpus.dataset import StageCrops, load_manifest
from pipeline.io import atomic_write_json
from pipeline.run import (
    check_checkpoints,
    check_run_config,
    list_checkpoints,
    logs_dir,
    metrics_path,
    result_path,
    stage_dir,
)
from pipeline.runtime import Progress, torch_threads
from pipeline.training.ema import EMA
from pipeline.training.train_parts import (
    SCHEDULE_PROBE_STEPS,
    MetricLog,
    TrainState,
    WarmupCosine,
    check_stage,
    export_stage,
    logger,
    make_accelerator,
    save_checkpoint,
    seed_of,
    validation_batches,
    validation_bits,
    warm_start_linear,
)


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


@dataclass
class Throughput:
    """Samples trained, seconds busy and seconds waiting for data: since the last log line and in
    total (not checkpointed: speeds are measured afresh after a resume)."""

    samples: int = 0
    busy: float = 0.0
    wait: float = 0.0
    t0: float = field(default_factory=time.perf_counter)  # start of the current log window
    total_samples: int = 0
    total_busy: float = 0.0
    total_wait: float = 0.0

    def add(self, samples: int, busy: float, wait: float) -> None:
        self.samples, self.busy, self.wait = self.samples + samples, self.busy + busy, self.wait + wait

    def close_window(self) -> tuple[float, float]:
        """(samples per second over the window's wall time, data-wait share); starts a new window."""
        sps = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        share = self.wait / max(self.wait + self.busy, 1e-9)
        self.total_samples += self.samples
        self.total_busy += self.busy
        self.total_wait += self.wait
        self.samples, self.busy, self.wait, self.t0 = 0, 0.0, 0.0, time.perf_counter()
        return sps, share

    def overall(self) -> tuple[float, float]:
        """(samples per second over busy + waiting time, data-wait share) of the whole run."""
        busy = self.total_busy + self.total_wait
        return self.total_samples / max(busy, 1e-9), self.total_wait / max(busy, 1e-9)


class StageTrainer:
    """Training of one stage in four parts: ``setup`` (run folder, model, data), ``step`` (one
    micro-batch), ``validate`` (bits on the fixed crops, export of the best) and ``finish``
    (last validation, checkpoint, summary).  Persistent counters live in ``self.state``
    (``TrainState``, checkpointed), speeds in ``self.speed`` (``Throughput``)."""

    def __init__(self, data_dir, run_dir, cfg: StrataConfig, k: int, max_steps: int | None = None,
                 max_minutes: float | None = None, resume: bool = False, progress: bool = True):
        self.t_start = time.perf_counter()
        self.data_dir, self.run_dir, self.cfg, self.k = Path(data_dir), Path(run_dir), cfg, k
        self.seed_key = k  # an int in every seed of this stage's random choices
        self.title, self.unit = f"stage {k}", "samples"  # progress lines: "stage 0 ... samples/s"
        self.t, self.resume, self.progress, self.max_steps = cfg.train, resume, progress, max_steps
        self.max_minutes = max_minutes
        self.budget_s = None if max_minutes is None else float(max_minutes) * 60.0
        self.state, self.speed = TrainState(), Throughput()
        self.stopped = "max_steps"

    def note(self, msg: str) -> None:
        logger.info(msg)
        if self.main and self.progress:
            print(f"note: {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------- setup

    def setup(self) -> StageTrainer:
        self.accelerator = acc = make_accelerator(self.cfg)
        self.main = acc.is_main_process
        if self.cfg.train.mixed_precision != "no" and acc.mixed_precision == "no":
            self.note(f"mixed_precision={self.cfg.train.mixed_precision} needs a GPU here: "
                      f"training in full precision on CPU")
        if acc.num_processes == 1:
            torch.set_num_threads(torch_threads())
        self._prepare_run_folder()
        self._build_model()
        self._restore()
        self._build_data()
        self.log = MetricLog(self.run_dir, self.k, self.main, self.resume_step)
        self.bar = Progress(self.main and self.progress, every=0)
        self.label = self.bar.add(self.title, self.stop_at, unit="steps", start=self.state.step,
                                  deadline_s=self.budget_s)
        return self

    def _prepare_run_folder(self) -> None:

        run_dir, k, acc = self.run_dir, self.k, self.accelerator
        self.manifest = load_manifest(self.data_dir)
        check_stage(self.cfg, k, self.manifest, self.data_dir)
        self.s = self.cfg.stages[k]
        self.stop_at = int(self.max_steps if self.max_steps is not None else self.s.max_steps)
        check_checkpoints(run_dir, k, self.resume)
        check_run_config(run_dir, self.cfg, self.resume, write=self.main)  # config.yaml is written atomically
        acc.wait_for_everyone()
        if self.main and not self.resume:  # a fresh start (no checkpoint): forget metrics of a run that died before one
            shutil.rmtree(logs_dir(run_dir, k), ignore_errors=True)
            metrics_path(run_dir, k).unlink(missing_ok=True)
        acc.wait_for_everyone()

    def _build_model(self) -> None:
        # local: keeps accelerate out of `import pipeline.training.trainer` until this runs
        from accelerate.utils import set_seed


        cfg, k, t = self.cfg, self.k, self.t
        self.n_genres = len(self.manifest["genres"])
        set_seed(seed_of(t.seed, k))
        model = build_stage(cfg, k, self.n_genres)
        if not self.resume and getattr(model, "linear", None) is not None:
            fit = warm_start_linear(model, self.data_dir, self.manifest, cfg, k, seed_of(t.seed, k))
            self.note(f"stage {k}: linear path warm-started by least squares on {fit['rows']} rows "
                      f"(rmse {fit['rmse']:.4f}, scale {fit['scale']:.4f}, own-past noise gain "
                      f"{fit['noise_gain']:.2f}, input noise {cfg.stages[k].linear_input_noise:g})")
        self.geo = crop_geometry(cfg, k, model)  # margin: below / roll past the crop
        self.end_code = model.end_code if getattr(model, "end_code", None) is not None else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.cosine = WarmupCosine(t.warmup_steps, self.s.max_steps, t.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.cosine)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.ema = EMA(self.unwrapped, t.ema_decay)  # shadow weights on the model's device
        for obj in (self.scheduler, self.ema, self.state):
            self.accelerator.register_for_checkpointing(obj)

    def _restore(self) -> None:
        self.resume_step = None
        if self.resume:
            _, folder = list_checkpoints(self.run_dir, self.k)[-1]
            self.accelerator.load_state(str(folder))
            self.resume_step = self.state.step
            self.note(f"{self.title}: resumed from {folder} (step {self.state.step})")
        self.micro_index = self.state.step * self.t.grad_accum  # seeds the micro-batch's random choices
        self.acc_loss, self.acc_n, self.grad_norm = 0.0, 0, float("nan")

    def _build_data(self) -> None:

        cfg, k, t, geo, acc = self.cfg, self.k, self.t, self.geo, self.accelerator
        micro = self.s.batch_size
        per_step = micro * t.grad_accum  # items per optimizer step per process
        train_ds = StageCrops(self.data_dir, cfg, k, split="train", context=geo.context,
                              seed=seed_of(t.seed, k, acc.process_index), length=10**12, margin=geo.margin,
                              manifest=self.manifest)
        start_item = self.state.step * per_step
        n_items = max(0, self.stop_at - self.state.step) * per_step
        self.loader = torch.utils.data.DataLoader(
            train_ds, batch_size=micro, sampler=range(start_item, start_item + n_items), drop_last=True,
            num_workers=t.num_workers, persistent_workers=False,
        )
        ends = self.end_code is not None
        self.ends = EndCrops(self.data_dir, cfg, k, geo.window, geo.margin, self.manifest) if ends else None
        self.openings = (OpeningCrops(self.data_dir, cfg, k, geo.window, geo.margin, self.manifest)
                         if self.s.opening_share > 0 else None)
        self.valid = validation_batches(self.data_dir, cfg, k, geo.context, self.note, geo.margin, self.manifest)

    # ------------------------------------------------------------------------- the loop

    def run(self) -> dict:
        if self.state.step == 0:  # the least-squares start, for the curves (and as the export to beat)
            self.validate()
        self.model.train()
        self.loop_t0, self.loop_step0 = time.perf_counter(), self.state.step
        self.speed = Throughput()
        for batch, waited in _batches(self.loader):
            if self.step(batch, waited) and self.after_step():
                break
        return self.finish()

    def step(self, batch: dict, waited: float) -> bool:
        """One micro-batch; True when it completed an optimizer step."""
        t0, acc, t = time.perf_counter(), self.accelerator, self.t
        gen = torch.Generator().manual_seed(seed_of(t.seed, self.seed_key, acc.process_index, self.micro_index, 7))
        self.micro_index += 1
        with acc.accumulate(self.model):
            loss, units = self.loss(batch, gen)
            acc.backward(loss)
            if acc.sync_gradients:
                clip = t.clip_grad_norm if t.clip_grad_norm and t.clip_grad_norm > 0 else float("inf")
                self.grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.acc_loss += float(loss.detach())
        self.acc_n += 1
        self.speed.add(units * acc.num_processes, time.perf_counter() - t0, waited)
        if not acc.sync_gradients:
            return False
        self.scheduler.step()
        self.ema.update(self.unwrapped)
        self.state.step += 1
        self.state.last_loss = self.acc_loss / self.acc_n
        self.acc_loss, self.acc_n = 0.0, 0
        return True

    def loss(self, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """(mean bits per sample of the micro-batch's crops, samples trained): teacher forcing with
        conditioning dropout drawn from ``gen``."""
        acc = self.accelerator
        open_mask = None
        if self.openings is not None:  # before the END crops, which may take a row back
            batch = insert_opening_crops(batch, self.openings, self.s.opening_share, gen)
            open_mask = batch.pop("open_mask")
        # silent pasts under sounding scores (entry_share; openings already start from nothing)
        silence_context(batch, self.s.entry_share, self.geo.context, self.cfg.data.mu_bits, gen, keep=open_mask)
        if self.end_code is not None:
            batch = insert_end_crops(batch, self.ends, gen, self.end_code)
            if open_mask is not None:
                open_mask = open_mask & ~batch["end_mask"]
        B, T = batch["x"].shape
        weights = loss_weights(B, T, self.geo.context, self.geo.window, batch.get("end_mask"), open_mask).to(acc.device)
        cond = model_inputs(batch, self.cfg, self.k, self.n_genres, gen, drop=True).to(acc.device)
        x = model_x(batch["x"].to(acc.device), self.unwrapped.head, self.cfg.data.mu_bits)  # (B, T)
        # the input past through noise like the stage's own draws (train_input_noise; the targets stay clean)
        x_in = self.unwrapped.noisy_past(x, cond, self.s.train_input_noise, gen)  # x itself at 0
        out = self.model(x_in, cond)  # (B, C, T)
        bits = self.unwrapped.head.nll_bits(out, x)  # (B, T)
        return (bits * weights).sum() / weights.sum(), B * self.s.crop

    def after_step(self) -> bool:
        """Log, report the steps a budget allows, validate, checkpoint; True when the wall-clock budget is spent."""
        step, t = self.state.step, self.t
        if step % max(1, t.log_every) == 0 or step == self.stop_at:
            self._log_step()
        if self.budget_s is not None and not self.state.schedule_fitted and \
                step - self.loop_step0 >= SCHEDULE_PROBE_STEPS:
            self._project_budget()
        if step % max(1, t.eval_every) == 0:
            self.validate()
        if step % max(1, t.checkpoint_every) == 0:
            save_checkpoint(self.accelerator, self.run_dir, self.k, step, t.keep_checkpoints)
        if self.budget_s is not None and _over_budget(self.accelerator, time.perf_counter() - self.t_start,
                                                      self.budget_s):
            self.stopped = "max_minutes"
            self.note(f"{self.title}: wall-clock budget of {self.max_minutes:g} min reached at step {step}")
            return True
        return False

    def _log_step(self) -> None:
        acc = self.accelerator
        mean_loss = float(acc.reduce(torch.tensor([self.state.last_loss], device=acc.device), "mean")[0])
        sps, share = self.speed.close_window()
        self.log.log(self.state.step, {"loss": mean_loss, "lr": self.scheduler.get_last_lr()[0],
                                       "grad_norm": self.grad_norm, "samples_per_second": sps,
                                       "data_wait_share": share})
        self.bar.update(self.label, self.state.step, info=f"loss {mean_loss:.3f} bits, {sps:,.0f} {self.unit}/s")

    def _project_budget(self) -> None:
        """Say, once, how many steps the wall-clock budget allows at the measured speed.  The cosine keeps the
        configured ``max_steps``: a budget stops a run where it stands and does not reshape its schedule, so
        step k trains the same on any machine (a cosine fitted to the budget annealed early: stage 1 of
        ``make demo`` lost 0.033 bits at its 310 steps; README, "A budget stops training")."""
        per_step = (time.perf_counter() - self.loop_t0) / (self.state.step - self.loop_step0)
        left = self.budget_s - (time.perf_counter() - self.t_start)
        steps = int(_agree(self.accelerator, self.state.step + left / per_step))
        self.state.schedule_fitted = True
        total = self.cosine.total
        if steps < total:
            self.note(f"{self.title}: the wall-clock budget allows about {steps} of the {total} configured steps; "
                      f"the learning rate will stand at {self.cosine(steps):.2f} of its peak there")
        self.log.log(self.state.step, {"budget_steps": steps})

    # ------------------------------------------------------------------------- validate, export, finish

    def validate(self) -> None:
        """Bits on the validation crops (EMA weights); export when best (or when nothing is exported)."""
        state, run_dir, k = self.state, self.run_dir, self.k
        bits = self.valid_bits()
        state.last_valid_bits, state.last_valid_step = bits, state.step
        self.log.log(state.step, {"valid_bits": bits})
        if bits < state.best_valid_bits or not stage_dir(run_dir, k).joinpath("model.json").exists():
            if bits < state.best_valid_bits:
                state.best_valid_bits, state.best_step = bits, state.step
            if self.main:
                self.export(bits)
        self.accelerator.wait_for_everyone()

    def valid_bits(self) -> float:
        return validation_bits(self.accelerator, self.unwrapped, self.ema, self.valid, self.cfg, self.k, self.n_genres,
                               self.geo.context)

    def export(self, bits: float) -> None:
        """The EMA weights into ``stages/<k>/`` (main process)."""
        extra = {"genres": list(self.manifest["genres"]), "rate": self.s.rate, "stage": self.k,
                 "valid_bits": bits, "step": self.state.step,
                 "training": {"linear_input_noise": self.s.linear_input_noise,
                              "train_input_noise": self.s.train_input_noise,
                              "opening_share": self.s.opening_share, "entry_share": self.s.entry_share}}
        export_stage(self.unwrapped, self.ema, self.run_dir, self.k, extra)

    def finish(self) -> dict:
        """Validate + export and checkpoint unless just done; the summary, also written to the run."""
        state, run_dir, k = self.state, self.run_dir, self.k
        had_window = self.speed.samples > 0
        self.speed.close_window()
        sps, share = self.speed.overall()
        if had_window:  # the last steps were not logged yet: show the final line
            self.bar.update(self.label, state.step, info=f"loss {state.last_loss:.3f} bits, {sps:,.0f} {self.unit}/s")
        if state.last_valid_step != state.step or not stage_dir(run_dir, k).joinpath("model.json").exists():
            self.validate()
        ckpts = list_checkpoints(run_dir, k)
        if not ckpts or ckpts[-1][0] != state.step:
            save_checkpoint(self.accelerator, run_dir, k, state.step, self.t.keep_checkpoints)
        self.log.close()
        self.bar.close()
        ckpts = list_checkpoints(run_dir, k)
        result = {
            "stage": k, "steps": state.step, "best_valid_bits": state.best_valid_bits, "best_step": state.best_step,
            "final_valid_bits": state.last_valid_bits, "final_loss": state.last_loss,
            "samples_per_second": sps, "data_wait_share": share, "seconds": time.perf_counter() - self.t_start,
            "stopped": self.stopped, "processes": self.accelerator.num_processes,
            "export": str(stage_dir(run_dir, k)), "checkpoint": str(ckpts[-1][1]) if ckpts else None,
        }
        if self.main:
            atomic_write_json(result_path(run_dir, k), result)
        self.accelerator.wait_for_everyone()
        return result


def _agree(accelerator, value: float) -> float:
    """The main process's ``value`` on every process (clocks differ; decisions must not)."""
    v = torch.tensor([float(value)], device=accelerator.device)
    if accelerator.num_processes > 1:
        # local: keeps accelerate out of `import pipeline.training.trainer` until this runs
        from accelerate.utils import broadcast

        v = broadcast(v, from_process=0)
    return float(v[0])


def _over_budget(accelerator, elapsed: float, budget: float) -> bool:
    """All processes agree on stopping (the main process's clock decides)."""
    return _agree(accelerator, 1.0 if elapsed > budget else 0.0) > 0
