"""Stage configuration as seen by ``models/``: a plain dict, rebuildable from ``model.json``.

``models/`` does not import ``pipeline/``.  A ``Stage`` accepts a ``pipeline.config.StageConfig``
(any dataclass), a mapping, or any object with the same attribute names; it keeps the config as
a plain dict (``stage.config``), filling missing keys with the defaults below (kept equal to
``pipeline.config.StageConfig``'s; a test checks that) -- except the keys of ``ABSENT_MEANS``
(added later), which mean "off" when absent so that old ``model.json`` files rebuild identically.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

CONDITIONING_DEFAULTS: dict[str, Any] = {"channels": 64, "layers": 4, "kernel_size": 3, "lookahead": 8}
HISTORY_DEFAULTS: dict[str, Any] = {"enabled": False, "pool": 64, "channels": 64, "layers": 6, "kernel_size": 2}
SCORE_DEFAULTS: dict[str, Any] = {"enabled": False, "bandwidth_hz": 1.0, "floor": 1e-3, "rolloff": 1.0}
STAGE_DEFAULTS: dict[str, Any] = {
    "rate": None,
    "residual_channels": 64,
    "gate_channels": 128,
    "skip_channels": 128,
    "kernel_size": 2,
    "dilation_cycles": 2,
    "cycle_length": 10,
    "head": "categorical",
    "mixtures": 10,
    "end_class": False,
    "use_genre": True,
    "use_roll": False,
    "use_tier_below": True,
    "conditioning": CONDITIONING_DEFAULTS,
    "history": HISTORY_DEFAULTS,
    "score": SCORE_DEFAULTS,
    "genre_dropout": 0.1,
    "below_dropout": 0.1,
    "roll_dropout": 0.3,
    "history_dropout": 0.1,
    "crop": 4000,
    "batch_size": 8,
    "max_steps": 2000,
    "time_share": 1.0,
    "linear_order": 32,
    "linear_below": 8,
    "adaptive_scale": True,
}
# Keys added after the first model.json format: a config (model.json, mapping, object) that lacks
# one of them gets this value instead of the default, so old checkpoints rebuild identically
# (linear_order 0 = no linear-prediction path; adaptive_scale False = the constant-at-init scale).
# Dataclass configs always carry them.
ABSENT_MEANS: dict[str, Any] = {"linear_order": 0, "linear_below": 0, "adaptive_scale": False}
_NESTED = {"conditioning": CONDITIONING_DEFAULTS, "history": HISTORY_DEFAULTS, "score": SCORE_DEFAULTS}


def _plain(value: Any) -> Any:
    """Dataclasses/namespaces/tuples -> dicts/lists (JSON-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def stage_config_dict(cfg: Any) -> dict[str, Any]:
    """Any stage config (dataclass, mapping, attribute object) -> complete plain dict."""
    if dataclasses.is_dataclass(cfg) or isinstance(cfg, (Mapping, SimpleNamespace)):
        raw = _plain(cfg)
    else:  # duck-typed object: read the known attributes
        raw = {k: _plain(getattr(cfg, k)) for k in STAGE_DEFAULTS if hasattr(cfg, k)}
    out = copy.deepcopy(STAGE_DEFAULTS)
    out.update(ABSENT_MEANS)  # overwritten below when the config has the key
    for key, value in raw.items():
        if key in _NESTED:
            sub = dict(_NESTED[key])
            sub.update(_plain(value) if value is not None else {})
            out[key] = sub
        else:
            out[key] = value
    return out


def as_namespace(d: Mapping[str, Any]) -> SimpleNamespace:
    """A config dict as attribute access (nested sections too)."""
    return SimpleNamespace(**{k: as_namespace(v) if isinstance(v, Mapping) else v for k, v in d.items()})
