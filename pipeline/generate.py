"""Generation: stage 0 at its rate, then each finer stage conditioned on the tier below.

``generate(run_dir, out_dir, ...)`` validates the parameters once (``pipeline/plan.py``), loads the
run once (``pipeline/run.py``), runs the cascade here and writes one job folder per variation
(``pipeline/jobs.py``).  The per-step sampling loop is ``models/sampling.py``.

- All variations (``count``) run as one batch through each stage's streaming engine.
- Prompts: a genre name (from the run's vocabulary), a MIDI file (piano roll for stages that
  use rolls), an audio file to continue (each tier is primed with the prompt's own tier).
- Classifier-free guidance (``guidance = W > 0``, genre and MIDI only): every stream has an
  unconditional twin in the same batch ("no genre" id, roll dropped); the logits are combined as

      l = l_u + (1 + W) * (l_c - l_u)

  (``W = 0`` is plain conditional sampling).  Guidance needs logits, so it applies to
  categorical heads; a logistic-mixture stage samples from its conditional output.
- A seeded ``torch.Generator`` makes every random choice: same seed and parameters give the
  same audio bit for bit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import RunError
from pipeline.jobs import write_jobs
from pipeline.plan import GenerateParams, Plan, make_plan, validate_params
from pipeline.run import LoadedRun, load_run
from pipeline.runtime import Progress, limited_threads, step_threads

# ----------------------------------------------------------------------------- sampling


def _is_float_head(stage) -> bool:
    """The stage samples floats in [-1, 1] (its head says) instead of mu-law codes."""
    return bool(getattr(stage.head, "float_input", False))


@dataclass
class StageResult:
    x: Any  # (B, n) int64 codes, or float32 in [-1, 1] for a logistic-mixture stage
    lengths: list[int]  # samples of each stream (all n unless the model ended a stream)
    wall: float
    twin: bool = False  # the unconditional twins ran (guidance)


def run_stage(stage, n: int, batch: int, *, genre, below=None, roll=None, twin: bool = False,
              guidance: float = 0.0, prompt=None, free_length: bool = False, min_length: int = 1,
              round_to: int = 1, temperature: float = 1.0, top_p: float = 1.0, end_threshold: float = 0.5,
              tier_prior: float = 0.0, generator=None, chunk: int | None = None,
              progress: Callable[[int], None] | None = None) -> StageResult:
    """Sample ``n`` samples of one stage for ``batch`` streams (``models.sampling.sample_stage``).

    genre: int64 (B,); below: int64 (B, n // factor) or None; roll: float (B, 256, F) or None;
    twin: the streams have a genre or roll that classifier-free guidance can use (the twins run only
    when ``guidance`` > 0 and the head gives logits); prompt: (B, P) values fed instead of samples
    for t < P; free_length: stop a stream where the model gives END a probability of at least
    ``end_threshold`` (stage 0).
    """
    from models.conditioning import Conditioning
    from models.sampling import sample_stage

    t0 = time.perf_counter()
    res = sample_stage(stage, n, batch, Conditioning(genre=genre, below=below, roll=roll),
                       no_genre=stage_no_genre(stage) if twin else 0, guidance=guidance, conditioned=twin,
                       prompt=prompt, free_length=free_length, min_length=min_length, round_to=round_to,
                       temperature=temperature, top_p=top_p, end_threshold=end_threshold, tier_prior=tier_prior,
                       generator=generator, chunk=chunk, progress=progress)
    return StageResult(res.x, res.lengths, time.perf_counter() - t0, res.twin)


def stage_no_genre(stage) -> int:
    """The stage's "no genre" id (``n_genres``)."""
    n = getattr(stage, "n_genres", None)
    if n is None:
        raise RunError("stage has no n_genres attribute: cannot build the unconditional stream")
    return int(n)


# ----------------------------------------------------------------------------- the cascade


@dataclass
class CascadeResult:
    tiers: dict[int, Any]  # {rate: (B, n_k) tensor} codes or floats, padded to the longest stream
    lengths: list[int]  # stage-0 samples of each stream
    timings: list[dict]  # per stage: wall, samples, rtf, samples/s


def run_cascade(run: LoadedRun, plan: Plan, p: GenerateParams, progress: bool = True) -> CascadeResult:
    """Stage 0 -> stage 1 -> ... with one seeded generator and all variations as one batch."""
    import torch

    cfg, rates, B = run.cfg, run.rates, p.count
    gen = torch.Generator().manual_seed(p.seed)
    genre = torch.full((B,), plan.genre_id, dtype=torch.int64)  # (B,)
    chunk = p.chunk or cfg.generate.chunk
    unit0 = rates[0] // cfg.data.roll_fps  # stage-0 samples per roll frame
    tiers: dict[int, Any] = {}
    timings: list[dict] = []
    lengths0: list[int] | None = None
    n0 = plan.n0
    below = None
    for k, stage in enumerate(run.stages):
        scfg = cfg.stages[k]
        rate = rates[k]
        n = n0 * rate // rates[0]
        if k == 0 and plan.resynth_tiers is not None:  # re-synthesis: the real coarse tier, stage 0 skipped
            tiers[rate] = torch.from_numpy(plan.resynth_tiers[rate].astype(np.int64)).expand(B, -1).clone()  # (B, n)
            below, lengths0 = tiers[rate], [n] * B
            timings.append({**_timing(k, rate, n, B, 0.0, False), "skipped": "resynth"})
            continue
        roll = None
        if plan.roll is not None and scfg.use_roll:
            frames = n * cfg.data.roll_fps // rate
            r = torch.from_numpy(plan.roll[:, :, :frames].reshape(256, frames).astype(np.float32) / 127.0)
            roll = r.unsqueeze(0).expand(B, -1, -1).contiguous()  # (B, 256, F)
        twin = p.guidance > 0 and ((plan.genre_id != run.no_genre and scfg.use_genre) or roll is not None)
        prompt = None
        if plan.prompt_tiers is not None:
            pt = torch.from_numpy(plan.prompt_tiers[rate].astype(np.int64))
            prompt = _prompt_values(pt, stage, cfg).unsqueeze(0).expand(B, -1)  # (B, P)
        bar = Progress(progress)
        label = bar.add(f"stage {k} ({rate} Hz)", n)
        res = run_stage(stage, n, B, genre=genre, below=below, roll=roll, twin=twin, guidance=p.guidance,
                        prompt=prompt, free_length=(k == 0 and plan.free_length),
                        min_length=unit0 + (0 if prompt is None else prompt.shape[1]),  # >= 1 frame new
                        round_to=unit0, temperature=stage_temperature(run, p, k), top_p=p.top_p,
                        end_threshold=p.end_threshold, tier_prior=p.tier_prior,
                        generator=gen, chunk=chunk,
                        progress=lambda done: bar.update(label, done))
        bar.finish(label, res.x.shape[1])
        bar.close()
        if k == 0:
            lengths0, n0 = res.lengths, res.x.shape[1]
        tiers[rate] = res.x
        below = _as_codes(res.x, stage, cfg)  # (B, n_k) int64 for the next stage
        n_k = res.x.shape[1]
        timings.append(_timing(k, rate, n_k, B, res.wall, res.twin))
    return CascadeResult(tiers, lengths0 or [n0] * B, timings)


def stage_temperature(run: LoadedRun, p: GenerateParams, k: int) -> float:
    """Stage k's sampling temperature: ``temperature`` times the stage's factor (1 where none is given)."""
    factors = p.stage_temperature or ()
    return p.temperature * (float(factors[k]) if k < len(factors) else 1.0)


def _prompt_values(codes, stage, cfg):
    """Prompt codes as the stage's sample values (the head decides: codes, or floats)."""
    return stage.head.codes_to_input(codes, cfg.data.mu_bits)


def _as_codes(x, stage, cfg):
    """The stage's samples as mu-law codes (the tier below of the next stage)."""
    return stage.head.input_to_codes(x, cfg.data.mu_bits)


def _timing(k: int, rate: int, n: int, batch: int, wall: float, twin: bool) -> dict:
    seconds = n / rate
    return {"stage": k, "rate": rate, "samples": n, "streams": batch * (2 if twin else 1),
            "wall_seconds": round(wall, 4), "audio_seconds": seconds,
            "real_time_factor": wall / seconds if seconds else None,
            "samples_per_second": batch * n / wall if wall > 0 else None}


# ----------------------------------------------------------------------------- entry point


def generate(run_dir, out_dir, progress: bool = True, **params: Any) -> list[Path]:
    """Generate ``count`` variations; returns their job folders (one per variation).

    ``params``: the fields of ``GenerateParams`` (``seconds``, ``genre``, ``midi``, ``prompt``,
    ``resynth`` (an audio file whose coarse tier replaces stage 0), ``temperature``, ``top_p``, ...);
    sampling parameters left out take the run's ``generate:`` config section.
    """
    return generate_jobs(validate_params(run_dir=run_dir, out_dir=out_dir, **params), progress=progress)


def generate_jobs(p: GenerateParams, progress: bool = True) -> list[Path]:
    """``generate`` for parameters already validated: loads the run (each stage once) and writes the jobs."""
    from pipeline.lock import generate_slots, slot

    run = load_run(p.run_dir)
    p = p.with_run_defaults(run.cfg.generate)
    plan = make_plan(run, p)
    # optional machine-wide limit on concurrent jobs (STRATA_MAX_GENERATE_JOBS): a lock-file semaphore
    with slot("generate", generate_slots(), note=lambda m: print(f"note: {m}", file=sys.stderr, flush=True)):
        t0 = time.perf_counter()
        with limited_threads(step_threads()):
            res = run_cascade(run, plan, p, progress=progress)
        total = time.perf_counter() - t0
        return write_jobs(run, plan, p, res, total)
