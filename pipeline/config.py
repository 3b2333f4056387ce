"""Configuration: frozen dataclasses and the one builder that turns a YAML file into them.

A config file (``configs/tiny.yaml``) has five sections: ``data``, ``preprocess``, ``stages``
(a list, coarse to fine), ``train`` and ``generate``.  Every field has a default, so a file only lists what it
changes.  The presets (``tiny``, ``base``) are package data in ``pipeline/configs/`` (a checkout's
``configs/`` is a link to it), so ``load_config("tiny")`` works from any folder after
``pip install``; ``load_config(None)`` gives ``tiny``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.config import ConditioningConfig, HistoryConfig, ScoreConfig, StageArchConfig
from models.quant import WEIGHT_FORMATS
from models.roll import ROLL_FPS
from pipeline.errors import StrataError
from pipeline.io import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the presets, shipped as package data
DEFAULT_PRESET = "tiny"
TRANSCRIPTION_METHODS = ("basic-pitch", "cqt")  # the estimators of pipeline/corpus/transcribe.py


class ConfigError(StrataError, ValueError):
    """A config file or value that cannot be used; the message names the field and reason."""


@dataclass(frozen=True)
class DataConfig:
    """How raw audio and MIDI become a dataset folder."""

    rates: tuple[int, ...] = (2000, 8000, 16000)  # tier rates r_0 < ... < r_K, Hz
    mu_bits: int = 8  # mu-law bit depth: 2**mu_bits classes
    peak: float = 0.95  # peak normalisation target
    trim_db: float = 40.0  # trim leading/trailing audio quieter than peak - trim_db
    min_seconds: float = 2.0  # a track shorter than this after trimming is skipped
    max_seconds: float = 600.0  # longer tracks are cropped (reported)
    roll_fps: int = ROLL_FPS  # piano-roll frames per second (models/roll.py)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / valid / test by track

    @property
    def classes(self) -> int:
        return 2**self.mu_bits


@dataclass(frozen=True)
class PreprocessConfig:
    """How tracks without aligned MIDI get a score at preprocess (pipeline/corpus/transcribe.py)."""

    estimate_scores: bool = True  # estimate a roll from the audio of every track without MIDI
    transcription: str = "basic-pitch"  # the estimator: one of TRANSCRIPTION_METHODS

    @property
    def estimator(self) -> str | None:
        """The transcription method to run on tracks without MIDI, None when estimation is off."""
        return self.transcription if self.estimate_scores else None


@dataclass(frozen=True)
class StageConfig(StageArchConfig):
    """One stage of the cascade: its architecture (``models.config.StageArchConfig``, the owner of
    those fields and defaults) plus how it is trained.  Stage k models tier k (rate ``rate``)."""

    # conditioning dropout probabilities used in training
    genre_dropout: float = 0.1
    below_dropout: float = 0.1
    roll_dropout: float = 0.3
    history_dropout: float = 0.1
    # the linear path's least-squares start reads its own past as if through white noise of this share of
    # the residual (a ridge; models/predictor.py ``_ridge_fit``): taps that amplify the stage's own sampled
    # draws less.  0: plain least squares (a fine stage's taps then amplify noise ~4.6x on the demo, and
    # sampling can lock into broadband noise: docs/ARCHITECTURE.md, "the noise trap")
    linear_input_noise: float = 0.0
    # training reads the input past through white noise of this share of the local residual (``Stage.noisy_past``,
    # LPCNet's noise injection; the targets stay clean).  Measured, not in the presets: 500 steps on the demo's
    # stage 1 cost 0.5 bits more on clean held-out audio than linear_input_noise alone (docs/ARCHITECTURE.md)
    train_input_noise: float = 0.0
    # share of training examples that are a track's opening scored from its first sample, where the stage's
    # past is the nothing every generated piece starts from (``pipeline.corpus.batches.OpeningCrops``); random
    # crops score only samples with a full receptive field of real audio.  0: none.  Measured, not in the presets:
    # 0.125 on the demo's stage 0 took 0.04 bits off held-out openings but sent all 3 folk pieces into the
    # silence trap (docs/results/opening.json)
    opening_share: float = 0.0
    # share of training crops whose left context (input only) is silence, while the crop and its score are the
    # track's (``pipeline.corpus.batches.silence_context``): the stage learns how sound enters a silent past where
    # notes sound, as every generated piece starts and as a stage trapped in silence must leave it (the
    # network's logits held 3 folk pieces silent on another soundfont; docs/ARCHITECTURE.md, "the silence
    # trap").  Random crops never show a silent past under sounding notes; openings show it only before the
    # first note, where silence goes on.  0: none.
    entry_share: float = 0.0
    # the per-sample matrices' format when the stage is loaded for sampling and evaluation (models/quant.py):
    # float32 | bf16 | int8 (per-channel scales); post-training, so changing it needs no retraining
    weights: str = "float32"
    # training crop and budget for this stage
    crop: int = 4000  # samples at this stage's rate (without left context)
    batch_size: int = 8
    max_steps: int = 2000
    time_share: float = 1.0  # share of train.max_minutes given to this stage


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_accum: int = 1
    clip_grad_norm: float = 1.0
    ema_decay: float | None = 0.999  # None: no EMA
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    eval_every: int = 200
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 20
    max_minutes: float | None = None  # wall-clock budget for all stages together
    num_workers: int = 0
    num_processes: int = 1  # >1: a stage runs under `accelerate launch`
    parallel_stages: int = 1  # stages trained at once, each in its own process (CPU: cores split)
    seed: int = 0


@dataclass(frozen=True)
class GenerateConfig:
    """A run's ``generate:`` section: the length rule and the defaults of the generation parameters of
    the same names (their types and ranges: ``pipeline.generation.plan.GenerateParams``, which also checks these
    values when it takes them)."""

    seconds: float = 8.0
    max_seconds: float = 60.0  # cap when the model decides the length (end class)
    end_threshold: float = 0.5  # a piece ends where the model gives the end class at least this probability
    temperature: float = 1.0
    # per-stage factors on the temperature (stage k: temperature * stage_temperature[k]; missing: 1).
    # A fine stage's adaptive scale follows its own sampled residuals: at 1 it is a random walk that
    # can fill the upper bands with noise; below 1 it settles on the tier below's interpolation.
    stage_temperature: tuple[float, ...] = ()
    # per-stage factors on the guidance W (stage k: guidance * stage_guidance[k]; missing: 1); e.g. [1, 0, 0]
    # guides stage 0 alone (docs/results/fine_sampling_guidance.json)
    stage_guidance: tuple[float, ...] = ()
    # what the guidance twin drops: "unconditional" (genre and roll: guided towards everything the stage is
    # told) or "no_genre" (the genre alone, the roll kept: guided towards the genre's sound, the notes as given)
    guidance_twin: str = "unconditional"
    # the stages' adaptive scale reads each drawn sample's |residual| / temperature (models/draw.py Draw.steady_scale):
    # below 1 the temperature then narrows each draw without shrinking the scale step after step; true / false for
    # every stage, or one per stage (e.g. [true, false, false]: stage 0 alone; missing: false)
    steady_scale: bool | tuple[bool, ...] = False
    # a piece with a score and no audio to start from is sampled from this much earlier, its first chord held
    # through the warm-up, which is then cut: every stage starts from silence and needs ~0.15 s to reach the
    # music's level (its scale follows its own past), heard as a fade-in from noise: docs/results/
    # fine_sampling_preroll.json (demo genre pieces with every window clean 14 -> 18 of 20)
    preroll_seconds: float = 0.5
    # per stage, > 0: the score taps' share of the stage's prediction where notes sound, instead of the share the
    # network sets (models/draw.py Draw.score_share; 1: the taps' full resonance at the notes' harmonics); a stage
    # without a value, or 0: the network's
    score_share: tuple[float, ...] = ()
    # per stage, without a fixed score_share: the network's share raised to this power (< 1: the resonance sharper,
    # the network's order between genres and frames kept); 1 or missing: as trained
    share_power: tuple[float, ...] = ()
    # per stage, > 0: the mix of the fine stage's adaptive scale with the tier below's level times its genre's
    # ratio (models/anchor.py; 1: the scale from the tier below and the genre alone); it needs the stage's
    # scale_anchor.json (pipeline/training/scale_anchor.py); 0 or missing: the scale follows its own draws
    scale_anchor: tuple[float, ...] = ()
    # per stage, > 0: a drawn sample's |residual| that the stage's adaptive scale reads is at most this many times the
    # logistic scale it was drawn with (models/draw.py Draw.scale_clip); 0 or missing: as trained
    scale_clip: tuple[float, ...] = ()
    # per stage, > 0: the adaptive scale's floor where the score's notes sound at sampling, in place of the stage's
    # trained score.scale_floor (models/draw.py Draw.note_floor): no fixed point in silence under a score's notes
    # (models/predictor.py, the silence trap); 0 or missing: as trained
    scale_floor: tuple[float, ...] = ()
    # per stage, > 0: the adaptive scale's floor everywhere at sampling, in place of the 1e-3 every stage trains with
    # (models/predictor.py ADAPT_FLOOR; models/draw.py Draw.adapt_floor); 0 or missing: as trained
    adapt_floor: tuple[float, ...] = ()
    # per stage, > 0: the same floor from the end of the score's last note on, in place of adapt_floor (models/draw.py
    # Draw.tail_floor): the stage decays there as a release does instead of settling at its floor's fixed point
    # (models/predictor.py); 0 or missing: as adapt_floor
    tail_floor: tuple[float, ...] = ()
    # an audio prompt without MIDI: its estimated notes are held this long into the continuation
    # (pipeline/corpus/transcribe.py; 0 = no score for the continuation)
    prompt_hold_seconds: float = 2.0
    # where a piece without MIDI or audio prompt gets its score: "tier" (the run's learned score tier,
    # pipeline/training/score_tier.py; the chain when the run has none), "chain" (the per-genre chord chain,
    # pipeline/training/score_model.py, a baseline) or "none" (stage 0 invents pitch: filtered noise)
    score_model: str = "tier"
    score_temperature: float = 1.0  # the score tier's sampling temperature
    score_top_p: float = 0.95  # ... and nucleus (which always keeps END)
    # classifier-free guidance of the score tier towards the asked genre (models/score_tier.py generate):
    # l_u + (1 + W) (l_c - l_u); 0 = off.  1: the genre in the notes 0.66 -> 0.79 (demo), 0.62 -> 0.72 (four
    # genres), style closer in 7 of 8 genres (docs/results/score_tier_guidance_w*.json)
    score_guidance: float = 1.0
    score_min_seconds: float = 4.0  # the score tier does not end a piece before this (a phrase at least)
    # the temperature at which a score tier with a length head draws the length it then writes to (models/score_tier.py
    # choose_length); below 1 the lengths gather towards the head's most likely ones
    score_length_temperature: float = 1.0
    # fine stages sample under a Gaussian prior of this width (decoded units) around the tier below
    # interpolated (models/sampling.py): no run-away oscillation or noise; 0 = off
    tier_prior: float = 0.1
    top_p: float = 0.99  # nucleus: drops the far tails (and the uniform share) that can derail sample-level generation
    # per stage, its own nucleus mass instead of top_p (missing: top_p): stage 0's tails are its broadband floor
    stage_top_p: tuple[float, ...] = ()
    guidance: float = 0.0
    chunk: int = 4096  # stage samples of conditioning computed per batched pass


@dataclass(frozen=True)
class ScoreTierSection:
    """The score tier (``models/score_tier.py``): a decoder-only Transformer over note events at the
    top of the cascade, and how it is trained (``pipeline/training/score_tier.py``)."""

    enabled: bool = True
    n_layers: int = 4
    n_heads: int = 4
    width: int = 128
    context: int = 512  # events the model sees at once
    dropout: float = 0.1
    clock_seconds: float = 2.0  # the clock: elapsed time of the piece as an input, in buckets of this many s
    clock_buckets: int = 150  # buckets (the last holds all later time); 0: no clock
    clock_anchors: int = 0  # > 0: the smooth clock instead, anchors log-spaced in time (4 per doubling)
    length_buckets: int = 96  # the asked length: time left to it as an input, log-spaced buckets; 0: none
    length_dropout: float = 0.3  # share of training windows not told their piece's length (a piece asked none)
    length_head: float = 0.1  # > 0: a head for the time left to END (the tier chooses lengths), its loss weight
    held_input: bool = True  # the pitches sounding after each event as an input (no forgotten held notes)
    genre_dropout: float = 0.1  # genre -> "no genre" in training: unconditional pieces, guidance
    transpose: int = 5  # augmentation: a random transposition in [-transpose, +transpose] semitones
    # the transposition as an input (models/score_tier.py ``transpositions``), sampled "as written": the tier
    # learns from every key and writes in its genre's keys; false: it writes in any of the 2 * transpose + 1
    key_input: bool = True
    stretch: float = 0.1  # augmentation: a random tempo factor in [1 - stretch, 1 + stretch]
    edge_share: float = 0.1  # share of training windows at a piece's opening or its END (else rare targets)
    excerpts: bool = True  # scores marked as excerpts (cut) read without END or length; false: as whole pieces
    batch_size: int = 16
    max_steps: int = 4000
    lr: float = 1e-3
    time_share: float = 0.25  # share of train.max_minutes given to the score tier


@dataclass(frozen=True)
class StrataConfig:
    data: DataConfig = field(default_factory=DataConfig)
    stages: tuple[StageConfig, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    score_tier: ScoreTierSection = field(default_factory=ScoreTierSection)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        validate(self)


# ----------------------------------------------------------------------------- building


def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys with a clear message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        sub = _NESTED.get((cls, name))
        if sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    hints = _hints(cls)
    for name, value in kwargs.items():
        if (cls, name) not in _NESTED and name in hints:
            _check_type(value, hints[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{where}: {e}") from None


def _hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: that field is not type-checked
        return {}


def _check_type(value: Any, hint: Any, where: str) -> None:
    """One line naming the key when ``value`` is not of the field's type (ints are floats too)."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                _check_type(value, option, where)
                return
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        ok = value is None
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where}: expected a list ({_type_name(hint)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            for i, v in enumerate(value):
                _check_type(v, args[0], f"{where}[{i}]")
        elif args:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            for i, (v, a) in enumerate(zip(value, args)):
                _check_type(v, a, f"{where}[{i}]")
        return
    else:
        return  # a type this checker does not know: left to the field's own checks
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


_NESTED: dict[tuple[type, str], type] = {
    (StageConfig, "conditioning"): ConditioningConfig,
    (StageConfig, "history"): HistoryConfig,
    (StageConfig, "score"): ScoreConfig,
}


def config_from_dict(raw: dict[str, Any]) -> StrataConfig:
    """The one builder: a plain mapping (parsed YAML/JSON) -> ``StrataConfig``."""
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a mapping at the top level")
    unknown = sorted(set(raw) - {"data", "preprocess", "stages", "train", "generate", "score_tier", "name"})
    if unknown:
        raise ConfigError(f"config: unknown section(s) {', '.join(unknown)}")
    data = _build(DataConfig, raw.get("data"), "data")
    stages_raw = raw.get("stages") or []
    if not isinstance(stages_raw, list):
        raise ConfigError("stages: expected a list")
    stages = []
    for k, s in enumerate(stages_raw):
        if s is not None and not isinstance(s, dict):
            raise ConfigError(f"stages[{k}]: expected a mapping, got {type(s).__name__}")
        s = dict(s or {})
        s.setdefault("rate", data.rates[k] if k < len(data.rates) else None)
        stages.append(_build(StageConfig, s, f"stages[{k}]"))
    if not stages:
        stages = [StageConfig(rate=r) for r in data.rates]
    return StrataConfig(
        data=data,
        stages=tuple(stages),
        train=_build(TrainConfig, raw.get("train"), "train"),
        generate=_build(GenerateConfig, _migrate_generate(_without_retired(raw.get("generate"), "generate")),
                        "generate"),
        score_tier=_build(ScoreTierSection, raw.get("score_tier"), "score_tier"),
        preprocess=_build(PreprocessConfig, raw.get("preprocess"), "preprocess"),
    )


RETIRED = {"generate": ("max_concurrent_jobs",)}  # keys read nowhere: accepted in old run folders, dropped


def _without_retired(raw: Any, section: str) -> Any:
    if not isinstance(raw, dict):
        return raw
    return {k: v for k, v in raw.items() if k not in RETIRED[section]}


def _migrate_generate(raw: Any) -> Any:
    """Configs written before the score tier: ``score_model: true|false`` -> ``"tier"|"none"``."""
    if isinstance(raw, dict) and isinstance(raw.get("score_model"), bool):
        return {**raw, "score_model": "tier" if raw["score_model"] else "none"}
    return raw


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted (``["base", "tiny"]``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(path: str | Path | None = None) -> Path:
    """The YAML file that ``path`` names: an existing file, else a preset.

    A preset is named bare (``tiny``), as a file name (``tiny.yaml``) or by its checkout path
    (``configs/tiny.yaml``, which then works from any folder).  Anything else is one
    ``ConfigError`` that lists the presets.
    """
    if path is None:
        path = DEFAULT_PRESET
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and p.parent in (Path("."), Path("configs")) and p.suffix in ("", ".yaml"):
        preset = CONFIG_DIR / f"{p.stem}.yaml"
        if preset.is_file():  # also when a folder of that name is here (a run folder "tiny")
            return preset
    if p.exists():
        raise ConfigError(f"{path}: not a config file")
    raise ConfigError(f"{path}: no such config file or preset (presets: {', '.join(preset_names())})")


def load_config(path: str | Path | None = None) -> StrataConfig:
    """Load a YAML config file or a preset ("tiny", "base"); ``None`` loads "tiny"."""
    p = resolve_config(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    try:
        return config_from_dict(raw or {})
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def config_to_dict(cfg: Any) -> Any:
    """Dataclasses -> plain dicts/lists (tuples become lists), for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def save_config(cfg: StrataConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def stage_config_from_dict(raw: dict[str, Any]) -> StageConfig:
    return _build(StageConfig, raw, "stage")


def config_fingerprint(cfg: Any) -> str:
    """Stable text of a config, to compare a run's config with a new one on --resume."""
    return json.dumps(config_to_dict(cfg), sort_keys=True)


# ----------------------------------------------------------------------------- checks


def validate(cfg: StrataConfig) -> None:
    d = cfg.data
    rates = list(d.rates)
    if len(rates) < 1 or any(r <= 0 for r in rates):
        raise ConfigError("data.rates: need at least one positive rate")
    for lo, hi in zip(rates, rates[1:]):
        if hi <= lo or hi % lo:
            raise ConfigError(f"data.rates: {hi} is not an integer multiple of {lo} above it")
    for r in rates:
        if r % d.roll_fps:
            raise ConfigError(f"data.rates: {r} Hz is not a multiple of roll_fps={d.roll_fps}")
    if not 1 <= d.mu_bits <= 16:
        raise ConfigError("data.mu_bits: must be in 1..16")
    if len(d.split) != 3 or abs(sum(d.split) - 1.0) > 1e-6 or min(d.split) < 0:
        raise ConfigError("data.split: three non-negative fractions summing to 1")
    if len(cfg.stages) > len(rates):
        raise ConfigError(f"stages: {len(cfg.stages)} stages but only {len(rates)} tier rates")
    for k, s in enumerate(cfg.stages):
        if s.rate != rates[k]:
            raise ConfigError(f"stages[{k}].rate={s.rate} does not match data.rates[{k}]={rates[k]}")
        try:  # the architecture's own checks (heads from the registry in models/heads.py)
            s.check(f"stages[{k}]")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if s.crop <= 0 or s.batch_size <= 0:
            raise ConfigError(f"stages[{k}]: crop and batch_size must be positive")
        for key in ("linear_input_noise", "train_input_noise"):
            if not 0 <= getattr(s, key) <= 10:
                raise ConfigError(f"stages[{k}].{key} must be in [0, 10], got {getattr(s, key)}")
        for key in ("opening_share", "entry_share"):
            if not 0 <= getattr(s, key) < 1:
                raise ConfigError(f"stages[{k}].{key} must be in [0, 1), got {getattr(s, key)}")
        if s.weights not in WEIGHT_FORMATS:
            raise ConfigError(f"stages[{k}].weights: {s.weights!r} not one of {' | '.join(WEIGHT_FORMATS)}")
    if cfg.preprocess.transcription not in TRANSCRIPTION_METHODS:
        raise ConfigError(f"preprocess.transcription: {cfg.preprocess.transcription!r} not one of "
                          f"{', '.join(TRANSCRIPTION_METHODS)}")
    t = cfg.train
    if t.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"train.mixed_precision: {t.mixed_precision!r} not one of no/bf16/fp16")
    st = cfg.score_tier
    if min(st.n_layers, st.n_heads, st.width, st.context, st.batch_size, st.max_steps) < 1:
        raise ConfigError("score_tier: n_layers, n_heads, width, context, batch_size and max_steps must be >= 1")
    if st.width % st.n_heads:
        raise ConfigError(f"score_tier.width={st.width} is not a multiple of n_heads={st.n_heads}")
    if not 0 <= st.dropout < 1 or not 0 <= st.genre_dropout <= 1 or not 0 <= st.stretch < 1 or st.transpose < 0:
        raise ConfigError("score_tier: dropout in [0, 1), genre_dropout in [0, 1], stretch in [0, 1), transpose >= 0")
    if st.clock_buckets < 0 or st.clock_seconds < 0.01:
        raise ConfigError("score_tier: clock_buckets >= 0 (0: no clock) and clock_seconds >= 0.01")
    if st.clock_anchors == 1 or st.clock_anchors < 0:
        raise ConfigError(f"score_tier.clock_anchors is 0 (the bucket clock) or >= 2, got {st.clock_anchors}")
    if st.length_head < 0 or (st.length_head > 0 and st.length_buckets < 2):
        raise ConfigError(f"score_tier.length_head is a loss weight >= 0 and needs length_buckets >= 2, got "
                          f"{st.length_head} with {st.length_buckets} buckets")
    if st.length_buckets == 1 or st.length_buckets < 0 or not 0 <= st.length_dropout <= 1:
        raise ConfigError("score_tier: length_buckets 0 (no length input) or >= 2, length_dropout in [0, 1]")
    if not 0 <= st.edge_share <= 1:
        raise ConfigError(f"score_tier.edge_share must be in [0, 1], got {st.edge_share}")


def stage_factor(cfg: StrataConfig, k: int) -> int:
    """Samples of tier k per sample of tier k-1 (1 for stage 0)."""
    return 1 if k == 0 else cfg.data.rates[k] // cfg.data.rates[k - 1]


def uses_tier_below(cfg: StrataConfig, k: int) -> bool:
    return k > 0 and cfg.stages[k].use_tier_below
