"""A stage's architecture: the typed, frozen config next to the model (as nanoGPT keeps ``GPTConfig``).

Only what shapes the network lives here; training knobs (crop, batch size, steps, time share,
dropout rates) are ``pipeline.config.StageConfig``'s own fields, added to this class by
inheritance, so every architecture field and default has this one owner.

``model.json`` stores ``StageArchConfig.to_dict()``; ``stage_arch(...)`` reads it back, and any
other mapping, dataclass or attribute object, with the one migration of old files:
``ABSENT_MEANS`` (keys added after the first model.json format mean "off" when absent, so old
checkpoints rebuild identically).  Keys that are not architecture fields (the training knobs
that older model.json files carry) are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from models.heads import head_class


@dataclass(frozen=True)
class ConditioningConfig:
    """Conditioning stack: reads the tier below (and the roll), non-causal, upsampled."""

    channels: int = 64
    layers: int = 4  # non-causal dilated conv layers at the tier-below rate
    kernel_size: int = 3
    lookahead: int = 8  # samples of the tier below visible ahead of t (at the below rate)


@dataclass(frozen=True)
class HistoryConfig:
    """History stack: the stage's own past, pooled to a low rate, strictly causal."""

    enabled: bool = False
    pool: int = 64  # stage samples per history frame
    channels: int = 64
    layers: int = 6  # causal dilated conv layers at the pooled rate
    kernel_size: int = 2


@dataclass(frozen=True)
class ScoreConfig:
    """Score-informed linear prediction (models/score.py): taps from the notes sounding now."""

    enabled: bool = False  # needs use_roll and the linear path
    bandwidth_hz: float = 1.0  # Gaussian lag window: width of each harmonic line (detuning tolerance)
    floor: float = 1e-3  # white-noise floor added at lag 0 (keeps the poles inside the unit circle)
    rolloff: float = 1.0  # harmonic h has amplitude h ** -rolloff
    # taps per frame: 0 = the stage's linear_order (stage 0 blends them with its own-past taps, so
    # they must match); a stage with a tier below predicts its linear part's residual with them
    # (models/score.py) and may use more (128 at 8 kHz resolves a 100 Hz note's harmonics)
    order: int = 0
    # with an adaptive scale: added to its floor where notes sound (models/predictor.py, the silence
    # trap); 0 = off (model files written before it existed)
    scale_floor: float = 0.0
    # harmonics below this frequency are left out of the taps (0: every harmonic).  A stage with a tier below
    # already has the band under the tier below's Nyquist: there its taps need ring only above it
    lowest_hz: float = 0.0
    # a learned spectral envelope per genre on the harmonics' powers, through this many knots evenly spaced
    # from 0 to the Nyquist frequency (models/score.py): the genre's timbre; 0 = the fixed h ** -rolloff
    timbre_knots: int = 0
    # false: one envelope for every genre (the corpus's average timbre; a control for the per-genre one)
    timbre_per_genre: bool = True
    # true: each harmonic line's width (the lag window, from bandwidth_hz) is learned per genre (timbre_per_genre) as
    # the envelope is: how far a genre's partials spread (chorus, vibrato); false: bandwidth_hz for every genre
    learned_bandwidth: bool = False
    # where the notes change, the taps (and the notes-sound mask) pass linearly from the last frame's to the new
    # frame's over this many ms of the new frame (at most a frame), as codecs interpolate their LPC between
    # frames; 0 = switched at the frame's first sample (model files written before it existed)
    crossfade_ms: float = 0.0


@dataclass(frozen=True)
class StageArchConfig:
    """One WaveNet stage's architecture.  Stage k models tier k (rate ``rate``)."""

    rate: int | None = None  # Hz; needed by the conditioning stack and the score taps
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 128
    kernel_size: int = 2
    dilation_cycles: int = 2
    cycle_length: int = 10  # dilations 1, 2, ..., 2**(cycle_length-1) per cycle
    head: str = "categorical"  # a registered head (models/heads.py): "categorical", "logistic_mixture"
    mixtures: int = 10  # logistic_mixture only
    end_class: bool = False  # heads that allow it (categorical): one extra "end of piece" class
    use_genre: bool = True
    use_roll: bool = False
    use_tier_below: bool = True  # ignored (False) for stage 0
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    # linear-prediction path + hybrid distribution (heads with linear_path; models/predictor.py)
    linear_order: int = 32  # own-past taps (0 = off; a model.json without the key loads with 0)
    linear_below: int = 8  # tier-below half-window (the ahead part is capped at conditioning.lookahead)
    adaptive_scale: bool = True  # logistic scale follows recent |residuals| of the linear part (absent: off)
    # the adaptive scale's floor (models/predictor.py ADAPT_FLOOR, 1e-3, the value of every stage before the key):
    # s >= k * adapt_floor, so a stage cannot learn residuals much finer than it (quiet releases, silence)
    adapt_floor: float = 1e-3

    def check(self, where: str = "stage") -> None:
        """ValueError naming the field (prefixed by ``where``) for an architecture that cannot be built."""
        try:
            head = head_class(self.head)
        except ValueError:
            raise ValueError(f"{where}.head: unknown head {self.head!r}") from None
        if self.end_class and not head.end_class:
            raise ValueError(f"{where}: end_class needs the categorical head")
        if self.history.enabled and self.history.pool <= 1:
            raise ValueError(f"{where}.history.pool must be > 1")
        if self.score.enabled and not (self.use_roll and self.linear_order > 0 and head.linear_path):
            raise ValueError(f"{where}.score needs use_roll and the linear path (linear_order > 0)")
        if self.score.bandwidth_hz < 0 or not 0 < self.score.floor < 1:
            raise ValueError(f"{where}.score: bandwidth_hz >= 0 and floor in (0, 1)")
        if self.score.order < 0:
            raise ValueError(f"{where}.score.order must be >= 0 (0 = linear_order)")
        if self.score.learned_bandwidth and not self.score.bandwidth_hz > 0:
            raise ValueError(f"{where}.score.learned_bandwidth starts from bandwidth_hz > 0")
        if not 0 < self.adapt_floor < 1:
            raise ValueError(f"{where}.adapt_floor must be in (0, 1)")
        if not 0 <= self.score.scale_floor < 1:
            raise ValueError(f"{where}.score.scale_floor must be in [0, 1)")
        if self.score.lowest_hz < 0:
            raise ValueError(f"{where}.score.lowest_hz must be >= 0")
        if not self.score.crossfade_ms >= 0:
            raise ValueError(f"{where}.score.crossfade_ms must be >= 0")

    def arch(self) -> StageArchConfig:
        """The architecture part alone (drops the fields a subclass adds)."""
        if type(self) is StageArchConfig:
            return self
        return StageArchConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StageArchConfig)})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the architecture fields (what model.json stores)."""
        return dataclasses.asdict(self.arch())


# Keys added after the first model.json format: a config (model.json, mapping, object) that lacks
# one of them gets this value instead of the default, so old checkpoints rebuild identically
# (linear_order 0 = no linear-prediction path; adaptive_scale False = the constant-at-init scale).
# Dataclass configs always carry them.
ABSENT_MEANS: dict[str, Any] = {"linear_order": 0, "linear_below": 0, "adaptive_scale": False}
_NESTED: dict[str, type] = {"conditioning": ConditioningConfig, "history": HistoryConfig, "score": ScoreConfig}
_FIELDS = tuple(f.name for f in dataclasses.fields(StageArchConfig))


def _section(cls: type, value: Any) -> Any:
    """A nested section from a dataclass, mapping (over the defaults), namespace or None."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    elif isinstance(value, SimpleNamespace):
        value = vars(value)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(value).items() if k in names})


def stage_arch(cfg: Any) -> StageArchConfig:
    """Any stage config -> ``StageArchConfig``: the dataclass (or ``pipeline``'s subclass) as is;
    a mapping (a model.json ``config``), namespace or attribute object by field name, with
    ``ABSENT_MEANS`` for the keys it lacks and the defaults elsewhere."""
    if isinstance(cfg, StageArchConfig):
        return cfg.arch()
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        raw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    elif isinstance(cfg, Mapping):
        raw = dict(cfg)
    elif isinstance(cfg, SimpleNamespace):
        raw = vars(cfg)
    else:  # duck-typed object: read the known attributes
        raw = {k: getattr(cfg, k) for k in _FIELDS if hasattr(cfg, k)}
    kw = dict(ABSENT_MEANS)  # overwritten below when the config has the key
    for key, value in raw.items():
        if key in _NESTED:
            kw[key] = _section(_NESTED[key], value)
        elif key in _FIELDS:
            kw[key] = value
    return StageArchConfig(**kw)
