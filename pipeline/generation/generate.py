"""Generation: stage 0 at its rate, then each finer stage conditioned on the tier below.

``generate(run_dir, out_dir, ...)`` validates the parameters once (``pipeline/generation/plan.py``), loads the
run once (``pipeline/run.py``), runs the cascade here and writes one job folder per variation
(``pipeline/generation/jobs.py``).  The per-step sampling loop is ``models/sampling.py``.

- All variations (``count``) run as one batch through each stage's streaming engine.
- With more than one core (``STRATA_GENERATE_WORKERS``) and the fused engine, the stages run side by
  side on threads, each reading the tier below as it is written (``can_pipeline``, ``GrowingTier``);
  otherwise one after the other.  The audio is the same either way (tested).
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

import dataclasses
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.anchor import ANCHOR_FILE, genre_ratio
from models.conditioning import Conditioning
from models.draw import Draw, stream_seeds
from models.roll import empty_roll, roll_input
from models.sampling import fused_engine_ok, sample_stage
from pipeline.errors import ParameterError, RunError
from pipeline.generation.jobs import CascadeResult, write_jobs, write_score_jobs
from pipeline.generation.plan import GenerateParams, Plan, make_plan, validate_params
from pipeline.lock import generate_slots, slot
from pipeline.run import SCORE_KEY, LoadedRun, is_exported, load_run, read_config, stage_dir
from pipeline.runtime import Progress, generate_workers, limited_threads, step_threads
from pipeline.training.scale_anchor import read_calibration

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
    engine: str = "reference"  # the sampling engine that ran


def run_stage(stage, n: int, batch: int, draw: Draw = Draw(), *, genre, below=None, roll=None,
              twin: bool = False, prompt=None, generator=None, chunk: int | None = None,
              progress: Callable[[int], None] | None = None, engine: str = "fused", workers: int = 1,
              wait_below=None, publish=None) -> StageResult:
    """Sample ``n`` samples of one stage for ``batch`` streams, chosen as ``draw`` says
    (``models.sampling.sample_stage``; ``models.draw.Draw``: guidance, temperature, top-p, tier prior, ends).

    genre: int64 (B,); below: int64 (B, n // factor) or None; roll: float (B, ROLL_CHANNELS, F) or None;
    twin: the streams have a genre or roll that classifier-free guidance can use (the twins run only
    when ``draw.guidance`` > 0 and the head gives logits); prompt: (B, P) values fed instead of samples
    for t < P.
    """

    t0 = time.perf_counter()
    res = sample_stage(stage, n, batch, Conditioning(genre=genre, below=below, roll=roll), draw,
                       no_genre=stage_no_genre(stage) if twin else 0, conditioned=twin, prompt=prompt,
                       generator=generator, chunk=chunk, progress=progress, engine=engine, workers=workers,
                       wait_below=wait_below, publish=publish)
    return StageResult(res.x, res.lengths, time.perf_counter() - t0, res.twin, res.engine)


def stage_no_genre(stage) -> int:
    """The stage's "no genre" id (``n_genres``)."""
    n = getattr(stage, "n_genres", None)
    if n is None:
        raise RunError("stage has no n_genres attribute: cannot build the unconditional stream")
    return int(n)


# ----------------------------------------------------------------------------- the cascade


def run_cascade(run: LoadedRun, plan: Plan, p: GenerateParams, progress: bool = True) -> CascadeResult:
    """Stage 0 -> stage 1 -> ... with one seeded generator and all variations as one batch; the
    stages run side by side (``_run_pipelined``) when ``can_pipeline`` says so, with the same result.
    With a warm-up (``preroll_frames``) the cascade samples it in front of the piece and cuts it."""
    frames = preroll_frames(run, plan, p)
    if not frames:
        return _run_cascade(run, plan, p, progress)
    unit0 = run.rates[0] // run.cfg.data.roll_fps  # stage-0 samples per roll frame
    res = _run_cascade(run, with_preroll(plan, frames, unit0), p, progress)
    cut = frames * unit0
    tiers = {rate: x[:, cut * rate // run.rates[0]:] for rate, x in res.tiers.items()}
    return CascadeResult(tiers, [max(n - cut, 0) for n in res.lengths], res.timings)


def preroll_frames(run: LoadedRun, plan: Plan, p: GenerateParams) -> int:
    """Roll frames of warm-up for a piece with a score and no audio to start from (an audio prompt or
    re-synthesis gives the stages a past already): ``preroll_seconds`` of them."""
    if plan.roll is None or plan.prompt_tiers is not None or plan.resynth_tiers is not None:
        return 0
    return int(round((p.preroll_seconds or 0.0) * run.cfg.data.roll_fps))


def with_preroll(plan: Plan, frames: int, unit0: int) -> Plan:
    """``plan`` with ``frames`` roll frames of warm-up in front: the notes sounding in the piece's first frame,
    struck at the warm-up's start and held through it (the piece's own onsets strike them again at frame 0)."""
    pre = empty_roll(frames)  # (2, 128, frames)
    pre[0] = plan.roll[0, :, :1]
    pre[1, :, 0] = plan.roll[0, :, 0]
    return dataclasses.replace(plan, roll=np.concatenate([pre, plan.roll], axis=2), n0=plan.n0 + frames * unit0,
                               preroll=frames * unit0)


def _run_cascade(run: LoadedRun, plan: Plan, p: GenerateParams, progress: bool) -> CascadeResult:
    """``run_cascade`` for a plan as it is (its warm-up, if any, included)."""
    gen = torch.Generator().manual_seed(p.seed)
    if can_pipeline(run, plan, p):
        return _run_pipelined(run, plan, p, gen, progress)
    B = p.count
    tiers: dict[int, Any] = {}
    timings: list[dict] = []
    lengths0: list[int] | None = None
    n0, below = plan.n0, None
    for k, stage in enumerate(run.stages):
        rate = run.rates[k]
        n = n0 * rate // run.rates[0]
        if k == 0 and plan.resynth_tiers is not None:  # re-synthesis: the real coarse tier, stage 0 skipped
            tiers[rate] = torch.from_numpy(plan.resynth_tiers[rate].astype(np.int64)).expand(B, -1).clone()  # (B, n)
            below, lengths0 = tiers[rate], [n] * B
            timings.append({**_timing(k, rate, n, B, 0.0, False), "skipped": "resynth"})
            continue
        bar = Progress(progress)
        label = bar.add(f"stage {k} ({rate} Hz)", n)
        res = run_stage(stage, n, B, below=below, **stage_inputs(run, plan, p, k, n), generator=gen,
                        engine=p.engine, workers=generate_workers(), progress=lambda done: bar.update(label, done))
        bar.finish(label, res.x.shape[1])
        bar.close()
        if k == 0:
            lengths0, n0 = res.lengths, res.x.shape[1]
        tiers[rate] = res.x
        below = _as_codes(res.x, stage, run.cfg)  # (B, n_k) int64 for the next stage
        timings.append({**_timing(k, rate, res.x.shape[1], B, res.wall, res.twin), "engine": res.engine})
    return CascadeResult(tiers, lengths0 or [n0] * B, timings)


def stage_inputs(run: LoadedRun, plan: Plan, p: GenerateParams, k: int, n: int) -> dict:
    """What stage k reads besides the tier below, and how it samples (``run_stage`` keywords: ``draw``
    is ``stage_draw``'s)."""
    cfg, B, rate = run.cfg, p.count, run.rates[k]
    scfg = cfg.stages[k]
    roll = None
    if plan.roll is not None and scfg.use_roll:
        frames = n * cfg.data.roll_fps // rate
        r = torch.from_numpy(roll_input(plan.roll[:, :, :frames]))  # (256, F)
        roll = r.unsqueeze(0).expand(B, -1, -1).contiguous()  # (B, 256, F)
    has_genre = plan.genre_id != run.no_genre and scfg.use_genre
    twin = stage_guidance(p, k) > 0 and (has_genre or (roll is not None and p.guidance_twin != "no_genre"))
    prompt = None
    if plan.prompt_tiers is not None:
        pt = torch.from_numpy(plan.prompt_tiers[rate].astype(np.int64))
        prompt = _prompt_values(pt, run.stages[k], cfg).unsqueeze(0).expand(B, -1)  # (B, P)
    return dict(genre=torch.full((B,), plan.genre_id, dtype=torch.int64), roll=roll, twin=twin, prompt=prompt,
                draw=stage_draw(run, plan, p, k, prompt), chunk=p.chunk)


def score_end(plan: Plan, rate: int, cfg) -> int:
    """The sample (at ``rate``) where the piece's score has sounded its last note (-1: no score, or no note)."""
    if plan.roll is None:
        return -1
    sounding = np.flatnonzero(plan.roll[0].any(axis=0))  # roll (2, 128, F): frames where a note sounds
    return -1 if len(sounding) == 0 else (int(sounding[-1]) + 1) * rate // cfg.data.roll_fps


def stage_draw(run: LoadedRun, plan: Plan, p: GenerateParams, k: int, prompt=None) -> Draw:
    """How stage k chooses its samples, from the generation parameters (``prompt``: the stage's (B, P))."""
    unit0 = run.rates[0] // run.cfg.data.roll_fps  # stage-0 samples per roll frame
    return Draw(guidance=stage_guidance(p, k), keep_roll=p.guidance_twin == "no_genre",
                temperature=stage_temperature(run, p, k), steady_scale=stage_steady(p, k),
                score_share=stage_score_share(p, k), share_power=_stage_factor(p.share_power, k),
                **stage_anchor(run, plan, p, k),
                scale_clip=_stage_factor(p.scale_clip, k, missing=0.0), top_p=stage_top_p(p, k),
                note_floor=_stage_factor(p.scale_floor, k, missing=0.0),
                adapt_floor=_stage_factor(p.adapt_floor, k, missing=0.0),
                tail_floor=_stage_factor(p.tail_floor, k, missing=0.0),
                tail_from=score_end(plan, run.rates[k], run.cfg),
                tier_prior=p.tier_prior, free_length=(k == 0 and plan.free_length),
                min_length=unit0 + plan.preroll + (0 if prompt is None else prompt.shape[1]),  # >= 1 frame new
                end_threshold=p.end_threshold, round_to=unit0)


# ----------------------------------------------------------------------------- the pipelined cascade


def can_pipeline(run: LoadedRun, plan: Plan, p: GenerateParams) -> bool:
    """Run the stages side by side: fewer variations than cores (``generate_workers``; with as many
    variations as cores, groups of streams keep the cores busier: measured 3.8x against 6.1x the
    time of one piece for 8 variations on 2 cores), the fused engine for every stage with mu-law
    codes out (categorical heads), a fixed length (stage 0 cannot end the piece), no guidance twins
    (their tier-below rows are a copy) and no re-synthesis."""

    workers = generate_workers()
    if p.engine != "fused" or workers < 2 or p.count >= workers or len(run.stages) < 2 or plan.free_length:
        return False
    if plan.resynth_tiers is not None or any(stage_inputs(run, plan, p, k, 1)["twin"] for k in range(len(run.stages))):
        return False
    return all(st.head.kind == "categorical" and fused_engine_ok(st) for st in run.stages)


class GrowingTier:
    """A tier's codes (B, n) written left to right by its stage on one thread and read by the next
    stage on another: ``publish(x, t)`` marks [0, t) final, ``wait(j)`` returns once [0, j) is."""

    def __init__(self, batch: int, n: int) -> None:
        self.codes = torch.zeros(batch, n, dtype=torch.int64)  # (B, n)
        self.n, self.ready, self.error = n, 0, None
        self._cv = threading.Condition()

    def publish(self, x: np.ndarray, t: int) -> None:
        with self._cv:
            if t > self.ready:
                self.codes[:, self.ready:t] = torch.from_numpy(x[:, self.ready:t]).long()
                self.ready = t
                self._cv.notify_all()

    def wait(self, j: int) -> None:
        with self._cv:
            while self.ready < min(j, self.n) and self.error is None:
                self._cv.wait()
            if self.error is not None:
                raise RunError(f"generation stopped: the stage below failed ({self.error})")

    def fail(self, error: BaseException) -> None:
        with self._cv:
            self.error = error
            self._cv.notify_all()


def _run_pipelined(run: LoadedRun, plan: Plan, p: GenerateParams, gen, progress: bool) -> CascadeResult:
    """The stages on threads, each reading the tier below as it is written (the kernel releases the
    GIL).  The streams' seeds are drawn first, in stage order, as the sequential cascade draws them:
    the same audio."""

    B, K = p.count, len(run.stages)
    ns = [plan.n0 * r // run.rates[0] for r in run.rates]
    seeds = [stream_seeds(gen, B) for _ in range(K)]
    tiers = [GrowingTier(B, n) for n in ns]
    bar = Progress(progress)
    labels = [bar.add(f"stage {k} ({run.rates[k]} Hz)", ns[k]) for k in range(K)]
    results: list[StageResult | None] = [None] * K
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            kw = stage_inputs(run, plan, p, k, ns[k])
            kw["draw"] = dataclasses.replace(kw["draw"], seeds=seeds[k])
            results[k] = run_stage(run.stages[k], ns[k], B, below=tiers[k - 1].codes if k else None, **kw,
                                   engine="fused",
                                   wait_below=tiers[k - 1].wait if k else None, publish=tiers[k].publish,
                                   progress=lambda done: bar.update(labels[k], done))
            bar.finish(labels[k], ns[k])
        except BaseException as e:  # noqa: BLE001  (re-raised below, after the other stages stop)
            errors.append(e)
            tiers[k].fail(e)

    threads = [threading.Thread(target=work, args=(k,), name=f"strata-stage-{k}") for k in range(K)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bar.close()
    if errors:
        raise errors[0]
    tiers_out = {run.rates[k]: results[k].x for k in range(K)}
    timings = [{**_timing(k, run.rates[k], ns[k], B, results[k].wall, False), "engine": results[k].engine,
                "pipelined": True} for k in range(K)]
    return CascadeResult(tiers_out, results[0].lengths, timings)


def _stage_factor(factors: tuple[float, ...] | None, k: int, missing: float = 1.0) -> float:
    """Stage k's value of a per-stage list (``stage_temperature``, ``stage_guidance``, ``score_share``): ``missing``
    where none is given."""
    factors = factors or ()
    return float(factors[k]) if k < len(factors) else missing


def stage_steady(p: GenerateParams, k: int) -> bool:
    """Whether stage k's adaptive scale reads drawn |residuals| / temperature (``steady_scale``: one value for every
    stage, or one per stage, missing: not)."""
    v = p.steady_scale
    return bool(_stage_factor(v, k, missing=0.0)) if isinstance(v, tuple) else bool(v)


def stage_score_share(p: GenerateParams, k: int) -> float:
    """Stage k's fixed share of the score taps where notes sound (0: the network's)."""
    return _stage_factor(p.score_share, k, missing=0.0)


_ANCHOR_WARNED: set[str] = set()  # stages already reported without a calibration


def stage_anchor(run: LoadedRun, plan: Plan, p: GenerateParams, k: int) -> dict:
    """Stage k's anchored scale (``Draw`` fields ``scale_anchor``, ``anchor_ratio``): the mix asked for and its
    genre's ratio from the stage's ``scale_anchor.json`` (the pooled one without a genre); off, with one line
    saying so, for a stage without that file."""
    mix = _stage_factor(p.scale_anchor, k, missing=0.0)
    if mix <= 0:
        return {}
    index = run.indices[k]
    genre = run.genres[plan.genre_id] if plan.genre_id < len(run.genres) else None
    ratio = genre_ratio(read_calibration(stage_dir(run.path, index)), genre)
    if ratio is None:
        key = f"{run.path}/{index}"
        if key not in _ANCHOR_WARNED:
            _ANCHOR_WARNED.add(key)
            print(f"warning: stage {index} has no {ANCHOR_FILE} (python -m pipeline.training.scale_anchor --data "
                  "DATA --run RUN writes it): its scale is not anchored", file=sys.stderr)
        return {}
    return {"scale_anchor": mix, "anchor_ratio": ratio}


def stage_temperature(run: LoadedRun, p: GenerateParams, k: int) -> float:
    """Stage k's sampling temperature: ``temperature`` times the stage's factor."""
    return p.temperature * _stage_factor(p.stage_temperature, k)


def stage_top_p(p: GenerateParams, k: int) -> float:
    """Stage k's nucleus mass: its ``stage_top_p`` value, else ``top_p``."""
    return _stage_factor(p.stage_top_p, k, missing=p.top_p)


def stage_guidance(p: GenerateParams, k: int) -> float:
    """Stage k's classifier-free guidance W: ``guidance`` times the stage's factor."""
    return p.guidance * _stage_factor(p.stage_guidance, k)


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


def _score_only(run: LoadedRun, p: GenerateParams) -> list[Path]:
    """``--score-only``: ``count`` scores (seeds ``seed + i``), no audio."""
    if not (p.midi is not None or p.score_model != "none"):
        raise ParameterError("--score-only with --score-model none: there is no score to write")
    plans, walls = [], []
    for i in range(p.count):
        t0 = time.perf_counter()
        plans.append(make_plan(run, p.model_copy(update={"seed": p.seed + i})))
        walls.append(time.perf_counter() - t0)
    return write_score_jobs(run, plans, p, walls)


def _score_run(p: GenerateParams) -> LoadedRun:
    """The run for ``--score-only``: loaded with its stages when they are all exported; else, when it has a score
    tier, its config and that tier alone (no stage is needed to write a score)."""
    try:
        return load_run(p.run_dir, weights=p.weights)
    except RunError:
        if not is_exported(p.run_dir, SCORE_KEY):
            raise
    # local: keeps accelerate out of `import pipeline.generation.generate` until this runs
    from pipeline.training.score_tier import load_score_tier

    tier = load_score_tier(p.run_dir)
    return LoadedRun(Path(p.run_dir).resolve(), read_config(p.run_dir), [], list(tier[1]["extra"]["genres"]),
                     score_tier=tier)


def generate_jobs(p: GenerateParams, progress: bool = True) -> list[Path]:
    """``generate`` for parameters already validated: loads the run (each stage once) and writes the jobs."""

    if p.score_only:
        run = _score_run(p)
        return _score_only(run, p.with_run_defaults(run.cfg.generate))
    run = load_run(p.run_dir, weights=p.weights)
    p = p.with_run_defaults(run.cfg.generate)
    plan = make_plan(run, p)
    if plan.score_note:
        print(f"note: {plan.score_note}", file=sys.stderr, flush=True)
    # optional machine-wide limit on concurrent jobs (STRATA_MAX_GENERATE_JOBS): a lock-file semaphore
    with slot("generate", generate_slots(), note=lambda m: print(f"note: {m}", file=sys.stderr, flush=True)):
        t0 = time.perf_counter()
        with limited_threads(step_threads()):
            res = run_cascade(run, plan, p, progress=progress)
        total = time.perf_counter() - t0
        return write_jobs(run, plan, p, res, total)
