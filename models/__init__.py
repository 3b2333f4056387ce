"""Networks and blocks of Strata (imports only torch, numpy, safetensors)."""

from models.cascade import Cascade
from models.checkpoint import (
    CheckpointError,
    load_stage,
    load_state_dict,
    save_stage,
    save_state_dict,
)
from models.conditioning import Conditioning
from models.config import StageArchConfig, stage_arch
from models.heads import HEADS, CategoricalHead, Head, LogisticMixtureHead, register_head
from models.predictor import LinearPath, lstsq_init
from models.streaming import StageStream
from models.wavenet import Stage, build_stage

__all__ = [
    "HEADS",
    "Cascade",
    "CategoricalHead",
    "CheckpointError",
    "Conditioning",
    "Head",
    "LinearPath",
    "LogisticMixtureHead",
    "Stage",
    "StageArchConfig",
    "StageStream",
    "build_stage",
    "load_stage",
    "lstsq_init",
    "load_state_dict",
    "register_head",
    "save_stage",
    "save_state_dict",
    "stage_arch",
]
