"""The run folder (DESIGN 7): its layout, its config checks and ``load_run``, in one place.

Layout of ``run_dir``:

- ``config.yaml``: the config every stage of the run was trained with (written by the first train);
- ``stages/<k>/model.safetensors`` + ``model.json``: the exported stage (``models.save_stage``);
  ``stages/score/`` the score tier (``pipeline.training.score_tier``), with ``data.json``: the pieces it saw;
- ``checkpoints/stage<k>/step-<n>/``: Accelerate's training state (``--resume``);
- ``logs/stage<k>/``: TensorBoard;
- ``metrics/stage<k>.jsonl`` (one row per logged step), ``metrics/stage<k>_result.json`` (the
  summary ``train_stage`` returns), ``metrics/loss.png`` (the train flow's curves),
  ``metrics/evaluation_<split>.json`` (the latest evaluation of that split, written by the evaluate flow);
- ``diagnostics_calibration.json``: the noise threshold of ``pipeline.evaluation.assess``.

``load_run`` reads the config once and every exported stage once (safetensors, never unpickled);
train, evaluate, generate, assess and the flows all go through it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import load_stage
from models.quant import quantize_stage
from pipeline.config import ConfigError, StrataConfig, config_to_dict, load_config, save_config
from pipeline.errors import RunError, StrataError

if TYPE_CHECKING:
    from models import Stage

CONFIG_FILE = "config.yaml"
SCORE_KEY = "score"  # the score tier among the stages: stages/score/, --stages score,0,1,2
CALIBRATION_FILE = "diagnostics_calibration.json"


# ----------------------------------------------------------------------------- layout


def config_path(run_dir) -> Path:
    return Path(run_dir) / CONFIG_FILE


def stages_dir(run_dir) -> Path:
    return Path(run_dir) / "stages"


def stage_name(k: int | str) -> str:
    """``stage0``, ``stage1``, ... for the WaveNet stages; ``score`` for the score tier (``SCORE_KEY``):
    the name of its checkpoints, logs and metric rows (``stage0/loss``, ``score/loss``)."""
    return SCORE_KEY if k == SCORE_KEY else f"stage{k}"


def stage_dir(run_dir, k: int | str) -> Path:
    return stages_dir(run_dir) / str(k)


def checkpoint_dir(run_dir, k: int | str) -> Path:
    return Path(run_dir) / "checkpoints" / stage_name(k)


def logs_dir(run_dir, k: int | str) -> Path:
    return Path(run_dir) / "logs" / stage_name(k)


def metrics_path(run_dir, k: int | str) -> Path:
    return Path(run_dir) / "metrics" / f"{stage_name(k)}.jsonl"


def result_path(run_dir, k: int | str) -> Path:
    return Path(run_dir) / "metrics" / f"{stage_name(k)}_result.json"


def loss_plot_path(run_dir) -> Path:
    return Path(run_dir) / "metrics" / "loss.png"


def evaluation_path(run_dir, split: str) -> Path:
    return Path(run_dir) / "metrics" / f"evaluation_{split}.json"


def evaluation_glob() -> str:
    """Every ``evaluation_path`` of a run, relative to it."""
    return "metrics/evaluation_*.json"


def calibration_path(run_dir) -> Path:
    return Path(run_dir) / CALIBRATION_FILE


def is_exported(run_dir, k: int | str) -> bool:
    """Stage k (or ``SCORE_KEY``, the score tier) has a complete export (weights and description)."""
    d = stage_dir(run_dir, k)
    return (d / "model.safetensors").is_file() and (d / "model.json").is_file()


def list_checkpoints(run_dir, k: int) -> list[tuple[int, Path]]:
    """Complete checkpoints of stage k, oldest first: [(step, folder)]."""
    d = checkpoint_dir(run_dir, k)
    out = []
    if d.is_dir():
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
    return sorted(out)


def read_metrics(run_dir, k: int) -> list[dict]:
    """Rows of ``metrics/stage<k>.jsonl`` (empty when absent)."""
    p = metrics_path(run_dir, k)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def read_result(run_dir, k: int) -> dict:
    """``metrics/stage<k>_result.json`` (what ``train_stage`` returned)."""
    return json.loads(result_path(run_dir, k).read_text())


# ----------------------------------------------------------------------------- config


def parse_config(path) -> StrataConfig:
    """``load_config(path)``, parsed once per file version (path, mtime, size): a command that checks
    and trains several stages reads the run's config.yaml once."""
    p = Path(path).resolve()
    st = p.stat()
    return _parse_cached(str(p), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=16)
def _parse_cached(path: str, mtime_ns: int, size: int, inode: int) -> StrataConfig:
    return load_config(path)


def read_config(run_dir) -> StrataConfig:
    """The run's ``config.yaml``; RunError when the folder is not a run or the config is bad."""
    run_dir = Path(run_dir)
    if not config_path(run_dir).is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml)")
    try:
        return parse_config(config_path(run_dir))
    except ConfigError as e:
        raise RunError(f"{run_dir}: bad config ({e})") from None


def resolve_config(config: str | None, run_dir) -> StrataConfig:
    """--config FILE, else the run's config.yaml, else the tiny preset."""
    if config:
        return load_config(config)
    if config_path(run_dir).is_file():
        return parse_config(config_path(run_dir))
    return load_config("tiny")


def differing_sections(old: StrataConfig, new: StrataConfig) -> list[str]:
    """Names of the config sections that differ, e.g. ``["stages[1]", "train (lr)"]``."""
    a, b = config_to_dict(old), config_to_dict(new)
    out = []
    for section in ("data", "train", "generate", "score_tier"):
        if a[section] != b[section]:
            keys = sorted(k for k in set(a[section]) | set(b[section]) if a[section].get(k) != b[section].get(k))
            out.append(f"{section} ({', '.join(keys)})")
    sa, sb = a["stages"], b["stages"]
    for i in range(max(len(sa), len(sb))):
        if i >= len(sa) or i >= len(sb) or sa[i] != sb[i]:
            out.append(f"stages[{i}]")
    return out


def check_run_config(run_dir, cfg: StrataConfig, resume: bool, write: bool) -> None:
    """Save ``config.yaml`` on the first train; later trains must use the same config."""
    path = config_path(run_dir)
    if path.is_file():
        diff = differing_sections(parse_config(path), cfg)
        if diff:
            what = "--resume" if resume else "training"
            raise RunError(
                f"{run_dir}: {what} with a config that differs from the run's config.yaml in "
                f"{'; '.join(diff)} (use the run's config or a new run folder)"
            )
    elif resume:
        raise RunError(f"{run_dir}: --resume but the run folder has no config.yaml (nothing to resume)")
    elif write:
        save_config(cfg, path)


def check_checkpoints(run_dir, k: int, resume: bool) -> None:
    """--resume needs a checkpoint of stage k; a fresh start must not overwrite one."""
    existing = list_checkpoints(run_dir, k)
    if resume and not existing:
        raise RunError(f"{run_dir}: --resume but stage {k} has no checkpoint in {checkpoint_dir(run_dir, k)}")
    if not resume and existing:
        raise RunError(f"{run_dir}: stage {k} already has checkpoints (latest: step {existing[-1][0]}); "
                       f"pass --resume to continue it, or train into a new run folder")


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadedRun:
    """A run folder loaded once: its config and its exported stages (coarse to fine)."""

    path: Path
    cfg: StrataConfig
    stages: list  # list[models.Stage], in ``indices`` order
    genres: list[str]
    stage_info: list[dict] = field(default_factory=list)  # from model.json, for meta.json
    indices: list[int] = field(default_factory=list)  # stage index of each entry of ``stages``
    score_tier: Any = field(default=None, repr=False)  # (model, model.json), loaded on first use (generation.plan)

    @property
    def rates(self) -> list[int]:
        return [int(self.cfg.stages[k].rate) for k in self.indices]

    @property
    def no_genre(self) -> int:
        return len(self.genres)

    def by_index(self) -> dict[int, Stage]:
        return dict(zip(self.indices, self.stages))


def load_run(run_dir, partial: bool = False, weights: str | None = None) -> LoadedRun:
    """Config + the exported stages of a run.

    ``partial=False`` (generation): every stage of the config must be exported.  ``partial=True``
    (evaluation): the exported ones, at least one.  A stage whose config says ``weights: bf16 | int8``
    is quantized as it loads (``models.quant.quantize_stage``; model.json's own ``weights`` already is);
    ``weights`` (``strata generate --weights``) overrides the config for every stage.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    stages, infos, indices, genres = [], [], [], None
    for k, scfg in enumerate(cfg.stages):
        if not is_exported(run_dir, k):
            if partial:
                continue
            raise _missing(run_dir, k, scfg.rate)
        stage, desc = _load_stage(stage_dir(run_dir, k))
        quantize_stage(stage, weights or scfg.weights)  # post-training: float32 keeps what model.json says
        stage_genres = _genres_of(desc)
        if genres is None:
            genres = stage_genres
        elif stage_genres is not None and stage_genres != genres:
            raise RunError(f"{run_dir}: stage {k} was trained with genres {stage_genres}, "
                           f"stage {indices[0]} with {genres}")
        stages.append(stage)
        infos.append(_stage_info(k, scfg.rate, desc))
        indices.append(k)
    if not stages:
        if partial:
            raise RunError(f"{run_dir}: no trained stage in stages/ (run strata train first)")
        raise RunError(f"{run_dir}: the config has no stages")
    return LoadedRun(run_dir.resolve(), cfg, stages, list(genres or []), infos, indices)


def check_run(run_dir) -> StrataConfig:
    """The cheap part of ``load_run`` (the config parses, every stage is exported), for the command
    line's checks before a flow starts: no weights are read."""
    cfg = read_config(run_dir)
    for k, scfg in enumerate(cfg.stages):
        if not is_exported(run_dir, k):
            raise _missing(run_dir, k, scfg.rate)
    return cfg


def check_score_run(run_dir) -> StrataConfig:
    """``check_run`` for ``--score-only``: every stage exported, or else the score tier (a run that trained only
    its score tier writes scores); the stages' error otherwise."""
    try:
        return check_run(run_dir)
    except RunError:
        if not is_exported(run_dir, SCORE_KEY):
            raise
        return read_config(run_dir)


def _missing(run_dir, k: int, rate: int) -> RunError:
    return RunError(f"{run_dir}: stage {k} ({rate} Hz) is missing (no stages/{k}/model.safetensors); train it first")


def _load_stage(folder: Path) -> tuple[Any, dict]:
    """(stage in eval mode, its model.json) with every failure as a RunError naming the folder."""
    try:
        stage = load_stage(folder)
    except StrataError as e:
        raise RunError(f"{folder}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a broken checkpoint is a user-facing error
        raise RunError(f"{folder}: cannot load stage ({type(e).__name__}: {e})") from None
    return stage.eval(), json.loads((folder / "model.json").read_text())


def export_extra(run_dir, k: int) -> dict:
    """The ``extra`` of stage k's model.json (steps, validation bits), {} when unreadable."""
    try:
        return json.loads((stage_dir(run_dir, k) / "model.json").read_text()).get("extra", {}) or {}
    except (OSError, ValueError):
        return {}


def _genres_of(desc: dict) -> list[str] | None:
    extra = desc.get("extra") or {}
    g = extra.get("genres", desc.get("genres"))
    return list(g) if g is not None else None


def _stage_info(k: int, rate: int, desc: dict) -> dict:
    """Small scalar facts from model.json (versions, steps) for meta.json."""
    info: dict[str, Any] = {"index": k, "rate": rate}
    for src in (desc, desc.get("extra") or {}):
        for key, v in src.items():
            if isinstance(v, (str, int, float, bool)) and key not in info:
                info[key] = v
    return info
