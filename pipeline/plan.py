"""What to generate: the parameters (one pydantic object, validated once at the boundary; sampling
defaults from the run's ``generate:`` config section) and the plan (lengths, genre, MIDI roll,
audio prompt, re-synthesis).

- Length: ``seconds``; else MIDI duration + 1 s release; else, when stage 0 has an end class,
  the model decides (capped at ``generate.max_seconds``); else ``generate.seconds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ParameterError
from pipeline.run import LoadedRun

MAX_SECONDS = 3600.0  # absolute cap on a requested length
MAX_COUNT = 64
RELEASE_SECONDS = 1.0  # added after the last MIDI note


# ----------------------------------------------------------------------------- parameters


class GenerateParams(BaseModel):
    """Generation parameters, checked once at the boundary (``validate_params``).

    The sampling parameters left None take the run's ``generate:`` config section
    (``with_run_defaults``): their defaults are declared once, in ``pipeline/config.py``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path
    out_dir: Path
    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    genre: str | None = None
    midi: Path | None = None
    prompt: Path | None = None
    resynth: Path | None = None  # real audio whose coarse tier replaces stage 0 (re-synthesis)
    temperature: float | None = Field(None, gt=0, allow_inf_nan=False)
    # per-stage factors on the temperature
    stage_temperature: tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...] | None = None
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    guidance: float | None = Field(None, ge=0, allow_inf_nan=False)
    end_threshold: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    prompt_hold_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    score_model: bool | None = None  # genre-only pieces: a score from the run's chord chain
    tier_prior: float | None = Field(None, ge=0, allow_inf_nan=False)  # fine stages: sigma around the tier below
    seed: int = Field(0, ge=0, lt=2**63)
    count: int = Field(1, ge=1, le=MAX_COUNT)
    chunk: int | None = Field(None, ge=1)
    engine: Literal["fused", "reference"] = "fused"  # the sampling loop (models/sampling.py)

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

    def with_run_defaults(self, g: Any) -> GenerateParams:
        """The parameters left None taken from the run's ``generate:`` section (``GenerateConfig``)."""
        return self.model_copy(update={k: getattr(g, k) for k in RUN_DEFAULTS if getattr(self, k) is None})


RUN_DEFAULTS = ("temperature", "stage_temperature", "top_p", "guidance", "end_threshold", "prompt_hold_seconds",
                "score_model", "tier_prior")

_HINTS = {
    "seconds": f"must be > 0 and at most {MAX_SECONDS:g}",
    "temperature": "must be > 0",
    "stage_temperature": "must be factors > 0, one per stage",
    "top_p": "must be in (0, 1]",
    "guidance": "must be >= 0",
    "end_threshold": "must be in (0, 1]",
    "prompt_hold_seconds": "must be >= 0",
    "tier_prior": "must be >= 0 (0 = off)",
    "seed": "must be a non-negative integer",
    "count": f"must be an integer from 1 to {MAX_COUNT}",
    "chunk": "must be a positive integer",
    "engine": "must be fused or reference",
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
    # "midi", "prompt" (notes estimated from the audio prompt), "estimated" (from the re-synthesised
    # audio), "score_model" or None
    roll_source: str | None = None
    score_note: str | None = None  # one line when a genre-only piece has no score to follow (and why)


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
    n0 = p0 + whole_frames(new, r0, unit0)
    source = "midi" if roll is not None else None
    note = None
    if roll is not None:  # MIDI time 0 = start of the continuation (after any prompt)
        roll = _fit_roll(roll, p0 // unit0, n0 // unit0)
    elif tiers is not None and p.prompt_hold_seconds > 0 and cfg.stages[0].use_roll:
        roll, source = _prompt_roll(cfg, rates, tiers, p0 // unit0, n0 // unit0, p.prompt_hold_seconds), "prompt"
    elif tiers is None and p.genre is not None and p.score_model and cfg.stages[0].use_roll:
        cap = n0 if p.seconds is not None else whole_frames(cfg.generate.max_seconds, r0, unit0)
        roll = _chain_roll(run, p, cap // unit0)
        source = None if roll is None else "score_model"
        if roll is None:
            note = (f"genre '{p.genre}' has no score in this run (none of its training tracks had MIDI or a roll "
                    f"estimated from its audio): the piece is rendered from the genre label alone, with no notes "
                    f"to follow")
        else:
            if p.seconds is None:  # the piece ends with its score (+ a release without notes), as with --midi
                n0, free = min(cap, unit0 * (roll.shape[2] + math.ceil(RELEASE_SECONDS * fps))), False
            roll = _fit_roll(roll, 0, n0 // unit0)
    return Plan(n0, free, genre_id, roll, tiers, p0 / r0, midi_seconds, roll_source=source, score_note=note)


def _prompt_roll(cfg: Any, rates: list[int], tiers: dict[int, np.ndarray], prompt_frames: int,
                 frames: int, hold: float) -> np.ndarray:
    """The audio prompt's estimated notes, held ``hold`` seconds past its end
    (pipeline/transcribe.py): the continuation starts from the prompt's harmony."""
    from pipeline.audio import mulaw_decode
    from pipeline.transcribe import prompt_roll

    audio = mulaw_decode(tiers[rates[-1]], bits=cfg.data.mu_bits)
    return prompt_roll(audio, rates[-1], cfg.data.roll_fps, prompt_frames, frames, hold)


def _resynth_plan(run: LoadedRun, p: GenerateParams, genre_id: int, roll, midi_seconds) -> Plan:
    """Re-synthesis: stage 0's tier is the real audio's (prepared as in training, cut to ``seconds``);
    only the finer stages generate.  MIDI time 0 = the start of the audio; without MIDI, the roll
    is estimated from the audio (pipeline/transcribe.py) when a generating stage reads one."""
    from pipeline.audio import mulaw_decode
    from pipeline.transcribe import estimate_roll

    cfg = run.cfg
    rates, unit0 = run.rates, run.rates[0] // cfg.data.roll_fps
    tiers = load_prompt_tiers(p.resynth, cfg, rates)  # whole roll frames at every rate
    n0 = tiers[rates[0]].shape[0]
    if p.seconds is not None:
        n0 = min(n0, whole_frames(p.seconds, rates[0], unit0))
    tiers = {r: codes[: n0 * r // rates[0]] for r, codes in tiers.items()}
    source = None if roll is None else "midi"
    if roll is not None:
        roll = _fit_roll(roll, 0, n0 // unit0)
    elif any(s.use_roll for s in cfg.stages[1:len(rates)]):
        fine = mulaw_decode(tiers[rates[-1]], bits=cfg.data.mu_bits)  # (n_K,)
        roll = estimate_roll(fine, rates[-1], cfg.data.roll_fps, n_frames=n0 // unit0)  # (2, 128, F)
        roll, source = (roll, "estimated") if roll[0].any() else (None, None)
    return Plan(n0, False, genre_id, roll, None, 0.0, midi_seconds, resynth_tiers=tiers, roll_source=source)


def _chain_roll(run: LoadedRun, p: GenerateParams, frames: int) -> np.ndarray | None:
    """A score for a genre-only piece from the run's chord chain (None: the run has none)."""
    from pipeline.score_model import read_score_model, sample_roll

    model = read_score_model(run.path)
    return None if model is None else sample_roll(model, p.genre, frames, p.seed)


def whole_frames(seconds: float, rate: int, unit: int) -> int:
    """``seconds`` at ``rate`` in samples, rounded up to whole roll frames of ``unit`` samples (>= 1 frame)."""
    return unit * max(1, math.ceil(round(seconds * rate) / unit))


def _fit_roll(roll: np.ndarray, offset: int, frames: int) -> np.ndarray:
    """Place ``roll`` (2, 128, F) at frame ``offset`` of an empty roll of ``frames`` frames."""
    out = np.zeros((2, 128, frames), np.uint8)
    take = max(0, min(roll.shape[2], frames - offset))
    out[:, :, offset: offset + take] = roll[:, :, :take]
    return out
