"""Generation: stage 0 at its rate, then each finer stage conditioned on the tier below.

``generate(run_dir, out_dir, ...)`` writes one job folder per variation (DESIGN 7):
``audio.wav``, ``tier_<rate>.wav``, ``spectrogram.png`` and ``meta.json``.

- All variations (``count``) run as one batch through each stage's streaming engine.
- Prompts: a genre name (from the run's vocabulary), a MIDI file (piano roll for stages that
  use rolls), an audio file to continue (each tier is primed with the prompt's own tier).
- Classifier-free guidance (``guidance = W > 0``, genre and MIDI only): every stream has an
  unconditional twin in the same batch ("no genre" id, roll dropped); the logits are combined as

      l = l_u + (1 + W) * (l_c - l_u)

  (``W = 0`` is plain conditional sampling).  Guidance needs logits, so it applies to
  categorical heads; a logistic-mixture stage samples from its conditional output.
- Length: ``seconds``; else MIDI duration + 1 s release; else, when stage 0 has an end class,
  the model decides (capped at ``generate.max_seconds``); else ``generate.seconds``.
- A seeded ``torch.Generator`` makes every random choice: same seed and parameters give the
  same audio bit for bit.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ParameterError, RunError
from pipeline.run import LoadedRun, load_run
from pipeline.runtime import Progress, limited_threads, package_version, step_threads

MAX_SECONDS = 3600.0  # absolute cap on a requested length
MAX_COUNT = 64
DEFAULT_TOP_P = 0.99  # nucleus sampling by default: the far tails (and the uniform share of the
# linear-prediction head) can start a feedback loop into noise in sample-level generation
RELEASE_SECONDS = 1.0  # added after the last MIDI note


# ----------------------------------------------------------------------------- parameters


class GenerateParams(BaseModel):
    """Generation parameters, checked at the boundary (flow, CLI, ``generate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path
    out_dir: Path
    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    genre: str | None = None
    midi: Path | None = None
    prompt: Path | None = None
    resynth: Path | None = None  # real audio whose coarse tier replaces stage 0 (re-synthesis)
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    # per-stage factors on the temperature; None: the run's generate.stage_temperature
    stage_temperature: tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...] | None = None
    top_p: float = Field(DEFAULT_TOP_P, gt=0, le=1, allow_inf_nan=False)
    guidance: float = Field(0.0, ge=0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, lt=2**63)
    count: int = Field(1, ge=1, le=MAX_COUNT)
    chunk: int | None = Field(None, ge=1)

    @field_validator("run_dir")
    @classmethod
    def _run_exists(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError("run folder not found")
        return v

    @field_validator("out_dir")
    @classmethod
    def _out_not_file(cls, v: Path) -> Path:
        if v.exists() and not v.is_dir():
            raise ValueError("exists and is not a folder")
        return v

    @field_validator("midi", "prompt", "resynth")
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError("file not found")
        return v

    @model_validator(mode="after")
    def _one_audio_input(self) -> "GenerateParams":
        if self.prompt is not None and self.resynth is not None:
            raise ValueError("give --prompt (continue audio) or --resynth (re-synthesise it), not both")
        return self


_HINTS = {
    "seconds": f"must be > 0 and at most {MAX_SECONDS:g}",
    "temperature": "must be > 0",
    "stage_temperature": "must be factors > 0, one per stage",
    "top_p": "must be in (0, 1]",
    "guidance": "must be >= 0",
    "seed": "must be a non-negative integer",
    "count": f"must be an integer from 1 to {MAX_COUNT}",
    "chunk": "must be a positive integer",
}


def validate_params(**kwargs: Any) -> GenerateParams:
    """Build ``GenerateParams``; any problem becomes one ``ParameterError`` line."""
    try:
        return GenerateParams(**kwargs)
    except ValidationError as e:
        raise ParameterError(_one_line(e)) from None


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        name = ".".join(str(p) for p in err["loc"]) or "parameters"
        hint = _HINTS.get(name)
        if hint is None or err["type"] in ("value_error", "extra_forbidden"):
            hint = err["msg"].removeprefix("Value error, ")
        parts.append(f"{name}={err.get('input')!r}: {hint}" if name != "parameters" else hint)
    return "invalid parameter: " + "; ".join(parts)


# ----------------------------------------------------------------------------- the run


# ----------------------------------------------------------------------------- prompts


@dataclass
class Plan:
    """What to generate: lengths (stage-0 samples), conditioning, prompt tiers."""

    n0: int  # stage-0 samples of the piece (the cap when the model decides the length)
    free_length: bool  # stage 0 may end the piece by sampling END
    genre_id: int
    roll: np.ndarray | None  # uint8 (2, 128, F) over the whole piece, or None
    prompt_tiers: dict[int, np.ndarray] | None  # {rate: uint8 codes}, aligned
    prompt_seconds: float
    midi_seconds: float | None
    resynth_tiers: dict[int, np.ndarray] | None = None  # {rate: uint8 codes} of the real audio (resynth)
    roll_source: str | None = None  # "midi", "prompt" (notes estimated from the audio prompt) or None


def resolve_genre(run: LoadedRun, genre: str | None) -> int:
    """Genre name -> id of the run's vocabulary; None -> the "no genre" id."""
    if genre is None:
        return run.no_genre
    if genre not in run.genres:
        known = ", ".join(run.genres) if run.genres else "none (the run was trained without genres)"
        raise ParameterError(f"genre {genre!r} is not one the run was trained on; known: {known}")
    return run.genres.index(genre)


def load_midi_roll(path: Path, fps: int) -> tuple[np.ndarray, float]:
    """MIDI file -> (uint8 roll (2, 128, F), duration in seconds); clear error if unusable."""
    from pipeline.midi import MidiError, midi_duration, piano_roll, read_midi

    try:
        notes = read_midi(path)
        duration = float(midi_duration(path))
    except MidiError as e:  # message is "<path>: <reason>" (unreadable, corrupt, no notes)
        raise ParameterError(f"MIDI prompt {e}") from None
    except Exception as e:  # noqa: BLE001 - mido raises many kinds on corrupt files
        raise ParameterError(f"{path}: unreadable MIDI ({type(e).__name__}: {e})") from None
    if not notes:
        raise ParameterError(f"{path}: the MIDI file has no notes")
    duration = max(duration, max(n.end for n in notes))
    return piano_roll(notes, fps=fps), duration


def load_prompt_tiers(path: Path, cfg: Any, rates: list[int]) -> dict[int, np.ndarray]:
    """Prompt audio prepared as in preprocessing, cropped to whole roll frames, then tiered."""
    from pipeline.audio import AudioError, make_tiers, prepare_audio

    fine = rates[-1]
    try:
        audio, _ = prepare_audio(path, fine, peak=cfg.data.peak, top_db=cfg.data.trim_db,
                                 min_seconds=0.0, max_seconds=cfg.generate.max_seconds)
    except AudioError as e:
        raise ParameterError(f"prompt {e}") from None
    unit = fine // cfg.data.roll_fps  # fine samples per roll frame (a multiple of r_K / r_0)
    n = (audio.shape[0] // unit) * unit
    if n == 0:
        raise ParameterError(f"{path}: prompt too short (under {1000 / cfg.data.roll_fps:g} ms)")
    tiers = make_tiers(audio[:n], rates, bits=cfg.data.mu_bits)  # {rate: uint8 (n * rate / fine,)}
    return tiers


def make_plan(run: LoadedRun, p: GenerateParams) -> Plan:
    """Resolve prompts and the length rule into stage-0 sample counts."""
    cfg, rates = run.cfg, run.rates
    r0, fps = rates[0], cfg.data.roll_fps
    unit0 = r0 // fps  # stage-0 samples per roll frame
    genre_id = resolve_genre(run, p.genre)
    if p.seconds is not None and p.seconds > cfg.generate.max_seconds:
        raise ParameterError(f"invalid parameter: seconds={p.seconds!r}: above generate.max_seconds="
                             f"{cfg.generate.max_seconds:g} of this run's config")
    if p.stage_temperature is not None and len(p.stage_temperature) > len(run.stages):
        raise ParameterError(f"invalid parameter: stage_temperature has {len(p.stage_temperature)} factors, "
                             f"this run has {len(run.stages)} stages")
    roll, midi_seconds = (None, None)
    if p.midi is not None:
        roll, midi_seconds = load_midi_roll(p.midi, fps)
    if p.resynth is not None:
        return _resynth_plan(run, p, genre_id, roll, midi_seconds)
    tiers = load_prompt_tiers(p.prompt, cfg, rates) if p.prompt is not None else None
    p0 = 0 if tiers is None else tiers[r0].shape[0]  # prompt samples at stage 0
    end_code = getattr(run.stages[0], "end_code", None)
    free = False
    if p.seconds is not None:
        new = p.seconds
    elif midi_seconds is not None:
        new = midi_seconds + RELEASE_SECONDS
    elif end_code is not None:
        new, free = cfg.generate.max_seconds, True
    else:
        new = cfg.generate.seconds
    n0 = p0 + unit0 * max(1, math.ceil(round(new * r0) / unit0))  # whole roll frames
    source = "midi" if roll is not None else None
    if roll is not None:  # MIDI time 0 = start of the continuation (after any prompt)
        roll = _fit_roll(roll, p0 // unit0, n0 // unit0)
    elif tiers is not None and cfg.generate.prompt_hold_seconds > 0 and cfg.stages[0].use_roll:
        roll, source = _prompt_roll(cfg, rates, tiers, p0 // unit0, n0 // unit0), "prompt"
    return Plan(n0, free, genre_id, roll, tiers, p0 / r0, midi_seconds, roll_source=source)


def _prompt_roll(cfg: Any, rates: list[int], tiers: dict[int, np.ndarray], prompt_frames: int,
                 frames: int) -> np.ndarray:
    """The audio prompt's estimated notes, held ``generate.prompt_hold_seconds`` past its end
    (pipeline/transcribe.py): the continuation starts from the prompt's harmony."""
    from pipeline.audio import mulaw_decode
    from pipeline.transcribe import prompt_roll

    audio = mulaw_decode(tiers[rates[-1]], bits=cfg.data.mu_bits)
    return prompt_roll(audio, rates[-1], cfg.data.roll_fps, prompt_frames, frames, cfg.generate.prompt_hold_seconds)


def _resynth_plan(run: LoadedRun, p: GenerateParams, genre_id: int, roll, midi_seconds) -> Plan:
    """Re-synthesis: stage 0's tier is the real audio's (prepared as in training, cut to ``seconds``);
    only the finer stages generate.  MIDI time 0 = the start of the audio."""
    rates, unit0 = run.rates, run.rates[0] // run.cfg.data.roll_fps
    tiers = load_prompt_tiers(p.resynth, run.cfg, rates)  # whole roll frames at every rate
    n0 = tiers[rates[0]].shape[0]
    if p.seconds is not None:
        n0 = min(n0, unit0 * max(1, math.ceil(round(p.seconds * rates[0]) / unit0)))
    tiers = {r: codes[: n0 * r // rates[0]] for r, codes in tiers.items()}
    roll = None if roll is None else _fit_roll(roll, 0, n0 // unit0)
    return Plan(n0, False, genre_id, roll, None, 0.0, midi_seconds, resynth_tiers=tiers)


def _fit_roll(roll: np.ndarray, offset: int, frames: int) -> np.ndarray:
    """Place ``roll`` (2, 128, F) at frame ``offset`` of an empty roll of ``frames`` frames."""
    out = np.zeros((2, 128, frames), np.uint8)
    take = max(0, min(roll.shape[2], frames - offset))
    out[:, :, offset: offset + take] = roll[:, :, :take]
    return out


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
              generator=None, chunk: int | None = None,
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
                       temperature=temperature, top_p=top_p, end_threshold=end_threshold, generator=generator,
                       chunk=chunk, progress=progress)
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
                        end_threshold=cfg.generate.end_threshold,
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
    """Stage k's sampling temperature: ``temperature`` times the stage's factor (the parameter's,
    else the run config's ``generate.stage_temperature``; 1 where none is given)."""
    factors = p.stage_temperature if p.stage_temperature is not None else run.cfg.generate.stage_temperature
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


# ----------------------------------------------------------------------------- outputs


def _to_audio(x, cfg) -> np.ndarray:
    """(n,) codes or floats -> float32 audio in [-1, 1]."""
    from pipeline.audio import mulaw_decode

    a = x.numpy()
    if a.dtype.kind == "f":
        return np.clip(a.astype(np.float32), -1.0, 1.0)
    return mulaw_decode(a, cfg.data.mu_bits)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV, atomically."""
    import soundfile as sf

    from pipeline.io import atomic_path

    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), audio, rate, subtype="PCM_16", format="WAV")


def job_names(seed: int, count: int) -> list[str]:
    """Program-made job folder names: ``job-<utc>-s<seed>-<random>-v<i>`` (never user strings)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    token = uuid.uuid4().hex[:8]
    return [f"job-{stamp}-s{seed}-{token}-v{i}" for i in range(count)]


def write_job(folder: Path, i: int, run: LoadedRun, plan: Plan, p: GenerateParams, res: CascadeResult,
              total_wall: float) -> dict:
    """Write one variation's files into ``folder``; returns its meta dict."""
    from pipeline.io import atomic_write_json
    from pipeline.spectrogram import plot_spectrogram

    cfg, rates = run.cfg, run.rates
    n0 = res.lengths[i]
    audios = {}
    for rate in rates:
        n = n0 * rate // rates[0]  # crop this stream to its own length
        audio = audios[rate] = _to_audio(res.tiers[rate][i, :n], cfg)
        write_wav(folder / f"tier_{rate}.wav", audio, rate)
    fine = rates[-1]
    write_wav(folder / "audio.wav", audio, fine)
    roll = None if plan.roll is None else plan.roll[:, :, : n0 * cfg.data.roll_fps // rates[0]]
    plot_spectrogram(audio, fine, folder / "spectrogram.png", roll=roll, roll_fps=cfg.data.roll_fps,
                     title=f"{folder.name.removeprefix('.tmp-')} ({len(audio) / fine:.2f} s)")
    seconds = len(audio) / fine
    ended = plan.free_length and n0 < plan.n0
    meta = {
        "job": folder.name.removeprefix(".tmp-"),
        "variation": i,
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in p.model_dump().items()},
        "seed": p.seed,
        "run": str(run.path),
        "genre_id": plan.genre_id,
        "genres": run.genres,
        "rates": rates,
        "seconds": seconds,
        "prompt_seconds": plan.prompt_seconds,
        "midi_seconds": plan.midi_seconds,
        "roll_source": plan.roll_source,
        "length_decided_by_model": plan.free_length,
        "ended_by_model": ended,
        "stages": run.stage_info,
        "package_version": package_version(),
        "timings": {
            "stages": res.timings,
            "total_wall_seconds": round(total_wall, 4),
            "real_time_factor": total_wall / seconds if seconds else None,
            "batch": p.count,
            "threads": step_threads(),
        },
        "guidance_formula": "l = l_u + (1 + W) * (l_c - l_u)",
        "created_utc": datetime.now(timezone.utc).isoformat(),
        "diagnostics": job_diagnostics(audios, run, plan, p, {
            "seconds": seconds, "length_decided_by_model": plan.free_length, "ended_by_end_class": ended}),
    }
    atomic_write_json(folder / "meta.json", meta)
    return meta


def job_diagnostics(audios: dict[int, np.ndarray], run: LoadedRun, plan: Plan, p: GenerateParams,
                    length: dict) -> dict:
    """``pipeline.assess`` diagnostics of one variation ({rate: float audio}); a failure is recorded
    in place of the numbers, never lost work."""
    from pipeline.assess import generation_diagnostics
    from pipeline.audio import mulaw_decode

    real = None if plan.resynth_tiers is None else {
        r: mulaw_decode(c, run.cfg.data.mu_bits) for r, c in plan.resynth_tiers.items()}
    try:
        return generation_diagnostics(audios, midi=p.midi, midi_offset=plan.prompt_seconds, run_dir=run.path,
                                      length=length, resynth=real,
                                      resynth_source=None if p.resynth is None else str(p.resynth))
    except Exception as e:  # noqa: BLE001 - diagnostics must not cost the generated piece
        return {"error": f"{type(e).__name__}: {e}", "length": length}


# ----------------------------------------------------------------------------- entry point


def generate(run_dir, out_dir, seconds=None, genre=None, midi=None, prompt=None, temperature=1.0,
             top_p=DEFAULT_TOP_P, guidance=0.0, seed=0, count=1, progress=True, chunk=None,
             resynth=None, stage_temperature=None) -> list[Path]:
    """Generate ``count`` variations; returns their job folders (one per variation).

    ``resynth``: an audio file whose coarse tier replaces stage 0 (only the finer stages run).
    """
    p = validate_params(run_dir=run_dir, out_dir=out_dir, seconds=seconds, genre=genre, midi=midi,
                        prompt=prompt, resynth=resynth, temperature=temperature,
                        stage_temperature=stage_temperature, top_p=top_p, guidance=guidance,
                        seed=seed, count=count, chunk=chunk)
    run = load_run(p.run_dir)
    plan = make_plan(run, p)
    t0 = time.perf_counter()
    with limited_threads(step_threads()):
        res = run_cascade(run, plan, p, progress=progress)
    total = time.perf_counter() - t0
    return write_jobs(run, plan, p, res, total)


def write_jobs(run: LoadedRun, plan: Plan, p: GenerateParams, res: CascadeResult, total: float) -> list[Path]:
    """Each job under a temporary name, renamed into place when complete (Ctrl-C leaves none)."""
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = job_names(p.seed, p.count)
    tmps = [out / f".tmp-{name}" for name in names]
    try:
        for i, tmp in enumerate(tmps):
            tmp.mkdir()
            write_job(tmp, i, run, plan, p, res, total)
        finals = []
        for name, tmp in zip(names, tmps):
            final = out / name
            os.rename(tmp, final)
            finals.append(final)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return finals
