"""What to generate: the parameters (one pydantic object, validated once at the boundary; sampling
defaults from the run's ``generate:`` config section) and the plan (lengths, genre, MIDI roll,
audio prompt, re-synthesis).

- Length: ``seconds``; else MIDI duration + 1 s release; else, when stage 0 has an end class,
  the model decides (capped at ``generate.max_seconds``); else ``generate.seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.quant import WEIGHT_FORMATS
from models.roll import empty_roll
from pipeline.config import GenerateConfig
from pipeline.corpus.audio import AudioError, make_tiers, mulaw_decode, prepare_audio
from pipeline.corpus.midi import MidiError, midi_duration, piano_roll, read_midi
from pipeline.corpus.score_events import (
    END,
    events_seconds,
    events_to_roll,
    first_onset_seconds,
    last_note_end_seconds,
    roll_to_events,
)
from pipeline.corpus.transcribe import estimate_roll, prompt_roll
from pipeline.errors import ParameterError
from pipeline.run import LoadedRun
from pipeline.training.score_model import read_score_model, sample_roll

MAX_SECONDS = 3600.0  # absolute cap on a requested length
MAX_COUNT = 64
RELEASE_SECONDS = 1.0  # added after the last MIDI note
# A score the tier writes for a piece must start with music: every training score of the demo corpus sounds its
# first note within 0.41 s, so a draw whose first note comes later than this (or never: 1 of 20 renaissance
# scores of 8 s, a 3000-step tier) is the sampler's accident, drawn again with another seed, SCORE_DRAWS in all
OPENING_SECONDS = 1.0
# ... and end with it: every whole training score's last note ends within 1.5 s of its END (334 demo scores, 336
# on the other soundfont), so a draw that leaves more than this silence before the piece's end (a tier told 8 s that
# writes 2.5 s of music) is drawn again too
ENDING_SECONDS = 2.0
SCORE_DRAWS = 4


# ----------------------------------------------------------------------------- parameters


class GenerateParams(BaseModel):
    """Generation parameters: each declared and range-checked here, once; checked at the boundary
    (``validate_params``).

    A parameter that ``GenerateConfig`` (a run's ``generate:`` section) also names is left None
    here and takes the run's value (``with_run_defaults``, which checks it by the same rules): its
    default is declared once, in ``pipeline/config.py``.
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
    # per-stage factors on the guidance (0: that stage unguided)
    stage_guidance: tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] | None = None
    # what the stages' guidance twin drops: genre and roll ("unconditional") or the genre alone ("no_genre")
    guidance_twin: Literal["unconditional", "no_genre"] | None = None
    # the adaptive scale reads drawn |residuals| / temperature: every stage, or per stage (missing: not)
    steady_scale: bool | tuple[bool, ...] | None = None
    preroll_seconds: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)  # warm-up sampled, then cut
    # per stage, > 0: the score taps' share where notes sound, fixed (0 or missing: the network's)
    score_share: tuple[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)], ...] | None = None
    # per stage: the network's share of the score taps raised to this power (1: as trained)
    share_power: tuple[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)], ...] | None = None
    # per stage, > 0: the adaptive scale's mix with the tier below's level (models/anchor.py)
    scale_anchor: tuple[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)], ...] | None = None
    # per stage, > 0: the |residual| the adaptive scale reads, at most this many times the draw's scale
    scale_clip: tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] | None = None
    # per stage, > 0: the adaptive scale's floor where notes sound, in place of the trained score.scale_floor
    scale_floor: tuple[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)], ...] | None = None
    # per stage, > 0: the adaptive scale's floor everywhere, in place of the trained 1e-3 (models/draw.py)
    adapt_floor: tuple[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)], ...] | None = None
    # per stage, > 0: that floor after the score's last note (models/draw.py Draw.tail_floor)
    tail_floor: tuple[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)], ...] | None = None
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    # per stage, its nucleus mass instead of top_p (missing: top_p)
    stage_top_p: tuple[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)], ...] | None = None
    guidance: float | None = Field(None, ge=0, allow_inf_nan=False)
    end_threshold: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    prompt_hold_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    # where a piece without MIDI or audio prompt gets its score: tier | chain | none (pipeline/config.py)
    score_model: Literal["tier", "chain", "none"] | None = None
    score_temperature: float | None = Field(None, gt=0, allow_inf_nan=False)
    score_top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    score_guidance: float | None = Field(None, ge=0, allow_inf_nan=False)  # the score tier's genre guidance W
    score_min_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)  # no END before this much music
    score_length_temperature: float | None = Field(None, gt=0, le=2, allow_inf_nan=False)  # the length head's draw
    continue_score: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False)  # --midi: extend it
    score_only: bool = False  # write the score (score.mid) alone, no audio
    tier_prior: float | None = Field(None, ge=0, allow_inf_nan=False)  # fine stages: sigma around the tier below
    seed: int = Field(0, ge=0, lt=2**63)
    count: int = Field(1, ge=1, le=MAX_COUNT)
    chunk: int | None = Field(None, ge=1)
    engine: Literal["fused", "reference"] = "fused"  # the sampling loop (models/sampling.py)
    # every stage's weights (models/quant.py); None: the config's
    weights: Literal[WEIGHT_FORMATS] | None = None

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
        if self.continue_score is not None and self.midi is None:
            raise ValueError("--continue-score extends a given score: it needs --midi")
        if self.score_only and (self.prompt is not None or self.resynth is not None):
            raise ValueError("--score-only writes a score: it takes --genre or --midi, not audio")
        return self

    def with_run_defaults(self, g: GenerateConfig) -> GenerateParams:
        """The parameters left None taken from the run's ``generate:`` section, checked as given ones."""
        update = {k: getattr(g, k) for k in RUN_DEFAULTS if getattr(self, k) is None}
        try:
            GenerateParams.model_validate({**self.model_dump(), **update})
        except ValidationError as e:
            raise ParameterError(_one_line(e, "the run's config generate.")) from None
        return self.model_copy(update=update)


RUN_DEFAULTS = tuple(k for k in GenerateParams.model_fields if k in {f.name for f in dataclasses.fields(GenerateConfig)}
                     and k != "seconds")  # a run's seconds is the length rule's last resort (make_plan)


def validate_params(**kwargs: Any) -> GenerateParams:
    """Build ``GenerateParams``; any problem becomes one ``ParameterError`` line."""
    try:
        return GenerateParams(**kwargs)
    except ValidationError as e:
        raise ParameterError(_one_line(e)) from None


def _one_line(e: ValidationError, where: str = "") -> str:
    parts = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        name = ".".join(loc) or "parameters"
        hint = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("value_error", "extra_forbidden") and loc:
            hint = _range(loc[0]) or hint
        parts.append(f"{where}{name}={err.get('input')!r}: {hint}" if name != "parameters" else hint)
    return "invalid parameter: " + "; ".join(parts)


def _range(name: str) -> str | None:
    """``must be > 0 and <= 1`` and the like, read from the field's own constraints."""
    field = GenerateParams.model_fields.get(name)
    if field is None:
        return None
    if typing.get_origin(field.annotation) is Literal:
        return "must be " + " or ".join(map(str, typing.get_args(field.annotation)))
    bounds = {}
    for m in _constraints(field):
        for op, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, op, None) is not None:
                v = getattr(m, op)
                bounds[op] = f"{sign} {v:g}" if isinstance(v, float) else f"{sign} {v}"
    said = [b for b in (bounds.get("gt") or bounds.get("ge"), bounds.get("lt") or bounds.get("le")) if b]
    return "must be " + " and ".join(said) if said else None


def _constraints(field) -> list:
    """The field's bounds (annotated-types objects), also those on a tuple's items."""
    found = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # X | None -> X; tuple[Annotated[float, Field], ...]
        for item in typing.get_args(arg):
            for info in getattr(item, "__metadata__", ()):
                found += list(getattr(info, "metadata", ()))
    return found


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
    # "midi", "prompt" (notes estimated from the audio prompt), "estimated" (from the re-synthesised audio),
    # "score_tier", "midi+score_tier" (--continue-score), "chain" (the chord chain) or None
    roll_source: str | None = None
    score_events: list[int] | None = None  # the score tier's events (score.mid), when it wrote the score
    score_note: str | None = None  # one line when a piece without MIDI or audio has no score to follow (and why)
    score_length: dict | None = None  # the length the score tier was asked for: {"seconds", "from"}
    score_draws: int | None = None  # the score tier's draws until one opened with music (``OPENING_SECONDS``)
    preroll: int = 0  # stage-0 samples of warm-up in front of roll and n0 (``generate.with_preroll``; cut after)


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
    cfg = run.cfg
    rates = run.rates or [int(s.rate) for s in cfg.stages]  # none loaded: a --score-only run of a score tier alone
    r0, fps = rates[0], cfg.data.roll_fps
    unit0 = r0 // fps  # stage-0 samples per roll frame
    genre_id = resolve_genre(run, p.genre)
    if p.seconds is not None and p.seconds > cfg.generate.max_seconds:
        raise ParameterError(f"invalid parameter: seconds={p.seconds!r}: above generate.max_seconds="
                             f"{cfg.generate.max_seconds:g} of this run's config")
    for name in ("stage_temperature", "stage_guidance", "steady_scale", "score_share", "share_power", "scale_anchor",
                 "scale_clip", "scale_floor", "adapt_floor", "tail_floor", "stage_top_p"):
        factors = getattr(p, name)
        if isinstance(factors, tuple) and len(factors) > len(rates):
            raise ParameterError(f"invalid parameter: {name} has {len(factors)} factors, this run has {len(rates)} "
                                 f"stages")
    roll, midi_seconds, events = None, None, None
    if p.midi is not None:
        roll, midi_seconds = load_midi_roll(p.midi, fps)
        if p.continue_score is not None:
            if midi_seconds + p.continue_score > cfg.generate.max_seconds:
                raise ParameterError(f"invalid parameter: continue_score={p.continue_score:g}: the MIDI file's "
                                     f"{midi_seconds:.1f} s plus the continuation exceed generate.max_seconds="
                                     f"{cfg.generate.max_seconds:g} of this run's config")
            roll, events = _continued_roll(run, p, roll, midi_seconds, p.continue_score)
            midi_seconds = roll.shape[2] / fps
    if p.resynth is not None:
        return _resynth_plan(run, p, genre_id, roll, midi_seconds)
    tiers = load_prompt_tiers(p.prompt, cfg, rates) if p.prompt is not None else None
    p0 = 0 if tiers is None else tiers[r0].shape[0]  # prompt samples at stage 0
    end_code = getattr(run.stages[0], "end_code", None) if run.stages else None
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
    source = None if roll is None else ("midi" if events is None else "midi+score_tier")
    note, asked, draws = None, None, None
    if roll is not None:  # MIDI time 0 = start of the continuation (after any prompt)
        roll = _fit_roll(roll, p0 // unit0, n0 // unit0)
    elif tiers is not None and p.prompt_hold_seconds > 0 and cfg.stages[0].use_roll:
        roll, source = _prompt_roll(cfg, rates, tiers, p0 // unit0, n0 // unit0, p.prompt_hold_seconds), "prompt"
    elif tiers is None and p.score_model != "none" and cfg.stages[0].use_roll:
        cap = n0 if p.seconds is not None else whole_frames(cfg.generate.max_seconds, r0, unit0)
        roll, events, source, asked, draws = written_score(run, p, genre_id, cap // unit0)
        if roll is None:
            who = f"genre '{p.genre}'" if p.genre else "an unconditional piece"
            why = ("the score tier wrote a score without notes" if events is not None else
                   "no score tier, and no chord chain: none of the genre's training tracks had MIDI or a roll "
                   "estimated from its audio")
            note = (f"{who} has no score in this run ({why}): the piece is rendered from the genre label alone, "
                    f"with no notes to follow")
            print(f"note: {note}", file=sys.stderr, flush=True)
        else:
            if p.seconds is None:  # the piece ends with its score (+ a release without notes), as with --midi
                n0, free = min(cap, unit0 * (roll.shape[2] + math.ceil(RELEASE_SECONDS * fps))), False
            roll = _fit_roll(roll, 0, n0 // unit0)
    return Plan(n0, free, genre_id, roll, tiers, p0 / r0, midi_seconds, roll_source=source, score_events=events,
                score_note=note, score_length=asked, score_draws=draws)


def draw_seed(seed: int, k: int) -> int:
    """The seed of the score tier's k-th draw for a piece of ``seed`` (k = 0: the seed itself); apart from
    the seeds of other pieces and variations (``seed + i``)."""
    return int(seed) if k == 0 else (int(seed) + 1) * 1_000_003 + int(k)


def unlike_training(events: list[int], piece_seconds: float | None, opening: float = OPENING_SECONDS) -> str | None:
    """Why a drawn score is unlike every training score, or None: no note, a first note after ``opening`` s, or its
    last note ending more than ``ENDING_SECONDS`` before the piece does (at ``piece_seconds``; None: where the score
    ends, its END)."""
    onset, last = first_onset_seconds(events), last_note_end_seconds(events)
    if onset is None:
        return "no note"
    if onset > opening:
        return f"its first note at {onset:.2f} s (every training score starts within {OPENING_SECONDS:g} s)"
    end = events_seconds(events) if piece_seconds is None else piece_seconds
    if end - last > ENDING_SECONDS:
        return (f"its music ending {end - last:.2f} s before the piece does (more than {ENDING_SECONDS:g} s: no "
                f"training score ends so)")
    return None


def written_score(run: LoadedRun, p: GenerateParams, genre_id: int, frames: int
                  ) -> tuple[np.ndarray | None, list[int] | None, str | None, dict | None, int | None]:
    """A score for a piece without MIDI or audio prompt: (roll (2, 128, <= frames), the score tier's events,
    source, the length it was asked for, the tier's draws).  ``p.score_model``: "tier" samples the run's score
    tier (the chain, with one line, when the run has none), drawn again (``draw_seed``) while its first note
    comes later than ``OPENING_SECONDS`` or never, or its last note ends more than ``ENDING_SECONDS`` before the
    piece does (``frames`` when ``p.seconds`` is given, else where the score ends), ``SCORE_DRAWS`` draws at most,
    the last one kept whatever it is; "chain" the genre's chord chain (genre-only pieces).  (None, None, None,
    None, None): no score."""
    # local: keeps accelerate out of `import pipeline.generation.plan` until this runs
    from pipeline.training.score_tier import is_trained

    fps = run.cfg.data.roll_fps
    if p.score_model == "tier" and is_trained(run.path):
        from pipeline.training.score_tier import sample_events

        model, desc = _score_tier_of(run)
        tier_genre = genre_id if genre_id < model.cfg.n_genres else model.cfg.n_genres
        asked = asked_length(run, p, tier_genre, model, frames / fps)
        length = None if asked is None else asked["seconds"]
        guidance = tier_guidance(desc, p.score_guidance)  # its note, if any, once for all draws
        opening = min(OPENING_SECONDS, frames / fps)
        for k in range(SCORE_DRAWS):
            events = sample_events(model, tier_genre, frames / fps, draw_seed(p.seed, k), p.score_temperature,
                                   p.score_top_p, min_seconds=p.score_min_seconds, length_seconds=length,
                                   guidance=guidance)
            why = unlike_training(events, frames / fps if p.seconds is not None else None, opening)
            if why is None:
                break
            if k + 1 < SCORE_DRAWS:
                print(f"note: the score tier's draw {k + 1} of at most {SCORE_DRAWS} has {why}: drawn again with "
                      f"another seed", file=sys.stderr, flush=True)
        roll = events_to_roll(events, fps, max_frames=frames)
        if not roll[0].any():  # said by make_plan
            return None, events, None, asked, k + 1
        return roll, events, "score_tier", asked, k + 1
    if p.score_model == "tier":
        print(f"note: {run.path} has no score tier (stages/score/): the score comes from the genre's chord chain",
              file=sys.stderr, flush=True)
    if p.genre is None:
        return None, None, None, None, None
    roll = _chain_roll(run, p, frames)
    return (None, None, None, None, None) if roll is None else (roll, None, "chain", None, None)


def asked_length(run: LoadedRun, p: GenerateParams, tier_genre: int, model, cap_seconds: float) -> dict | None:
    """The length a score tier that learned lengths is asked to write (None for one that did not):
    ``--seconds`` when given; else the one it chooses itself (a tier with a length head), else one drawn (by
    the seed) from its training pieces of the genre (all of them, unconditional); capped at ``cap_seconds``:
    the tier still writes the END itself."""
    if not model.cfg.length_buckets:
        return None
    if p.seconds is not None:
        return {"seconds": round(min(p.seconds, cap_seconds), 2), "from": "--seconds"}
    from pipeline.training.score_tier import chosen_length, training_lengths

    if model.cfg.length_head:
        chosen = chosen_length(model, tier_genre, p.seed, min_seconds=p.score_min_seconds,
                               temperature=p.score_length_temperature or 1.0)
        return {"seconds": round(min(chosen, cap_seconds), 2), "from": "the score tier's length head"}

    lengths = training_lengths(run.path, None if tier_genre >= model.cfg.n_genres else tier_genre) \
        or training_lengths(run.path, None)
    if not lengths:
        return None
    drawn = float(np.random.default_rng([int(p.seed), 211]).choice(lengths))
    return {"seconds": round(min(drawn, cap_seconds), 2), "from": "a training piece's length"}


def tier_guidance(desc: dict, w: float | None) -> float:
    """The score tier's guidance W for a tier described by ``desc`` (its model.json): 0, with one line, for a tier
    that never learned "no genre" (trained with ``genre_dropout`` 0: its twin would be an untrained embedding)."""
    w = float(w or 0.0)
    if w > 0 and desc.get("extra", {}).get("training", {}).get("genre_dropout", 1.0) == 0:
        print("note: the score tier was trained without genre dropout (no \"no genre\" to guide away from): "
              "score guidance is off", file=sys.stderr, flush=True)
        return 0.0
    return w


def _score_tier_of(run: LoadedRun):
    """The run's score tier, loaded once per ``LoadedRun``."""
    # local: keeps accelerate out of `import pipeline.generation.plan` until this runs
    from pipeline.training.score_tier import load_score_tier

    if run.score_tier is None:
        run.score_tier = load_score_tier(run.path)
    return run.score_tier


def _continued_roll(run: LoadedRun, p: GenerateParams, roll: np.ndarray, midi_seconds: float,
                    seconds: float) -> tuple[np.ndarray, list[int]]:
    """--midi FILE --continue-score S: the file's score (``midi_seconds`` long) extended by the score tier by
    ``seconds``."""
    # local: keeps accelerate out of `import pipeline.generation.plan` until this runs
    from pipeline.training.score_tier import is_trained, sample_events

    if not is_trained(run.path):
        raise ParameterError(f"--continue-score: {run.path} has no score tier (stages/score/; train it with "
                             f"strata train --stages score)")
    fps = run.cfg.data.roll_fps
    model, desc = _score_tier_of(run)
    genre_id = resolve_genre(run, p.genre)
    tier_genre = genre_id if genre_id < model.cfg.n_genres else model.cfg.n_genres
    prompt = [e for e in roll_to_events(roll, fps) if e != END]
    events = sample_events(model, tier_genre, seconds, p.seed, p.score_temperature, p.score_top_p, prompt=prompt,
                           min_seconds=p.score_min_seconds, length_seconds=midi_seconds + seconds,
                           guidance=tier_guidance(desc, p.score_guidance))
    return events_to_roll(events, fps, max_frames=int(round((midi_seconds + seconds) * fps))), events


def _prompt_roll(cfg: Any, rates: list[int], tiers: dict[int, np.ndarray], prompt_frames: int,
                 frames: int, hold: float) -> np.ndarray:
    """The audio prompt's estimated notes, held ``hold`` seconds past its end
    (pipeline/corpus/transcribe.py): the continuation starts from the prompt's harmony."""
    audio = mulaw_decode(tiers[rates[-1]], bits=cfg.data.mu_bits)
    return prompt_roll(audio, rates[-1], cfg.data.roll_fps, prompt_frames, frames, hold)


def _resynth_plan(run: LoadedRun, p: GenerateParams, genre_id: int, roll, midi_seconds) -> Plan:
    """Re-synthesis: stage 0's tier is the real audio's (prepared as in training, cut to ``seconds``);
    only the finer stages generate.  MIDI time 0 = the start of the audio; without MIDI, the roll
    is estimated from the audio (pipeline/corpus/transcribe.py) when a generating stage reads one."""
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
    model = read_score_model(run.path)
    return None if model is None else sample_roll(model, p.genre, frames, p.seed)


def whole_frames(seconds: float, rate: int, unit: int) -> int:
    """``seconds`` at ``rate`` in samples, rounded up to whole roll frames of ``unit`` samples (>= 1 frame)."""
    return unit * max(1, math.ceil(round(seconds * rate) / unit))


def _fit_roll(roll: np.ndarray, offset: int, frames: int) -> np.ndarray:
    """Place ``roll`` (2, 128, F) at frame ``offset`` of an empty roll of ``frames`` frames."""
    out = empty_roll(frames)
    take = max(0, min(roll.shape[2], frames - offset))
    out[:, :, offset: offset + take] = roll[:, :, :take]
    return out
