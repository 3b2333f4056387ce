"""Networks and blocks of Strata (imports only torch, numpy, safetensors)."""

from models.cascade import Cascade
from models.checkpoint import (
    CheckpointError,
    load_stage,
    load_state_dict,
    save_stage,
    save_state_dict,
)
from models.heads import CategoricalHead, LogisticMixtureHead
from models.predictor import LinearPath, lstsq_init
from models.streaming import StageStream
from models.wavenet import Stage

__all__ = [
    "Cascade",
    "CategoricalHead",
    "CheckpointError",
    "LinearPath",
    "LogisticMixtureHead",
    "Stage",
    "StageStream",
    "load_stage",
    "lstsq_init",
    "load_state_dict",
    "save_stage",
    "save_state_dict",
]
