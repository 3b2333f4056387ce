"""Prefect flow ``train``: one task per stage (DESIGN 5).

Stages are independent under teacher forcing.  On a small CPU machine they run one after
another; each gets ``max_minutes * stage.time_share`` minutes of the wall-clock budget
(``max_minutes`` defaults to ``cfg.train.max_minutes``).  With ``cfg.train.num_processes > 1`` a
stage task runs ``accelerate launch`` as a subprocess with that many processes.
Artifacts: a table of each stage's best/final bits per sample, and the loss curves
(``run/metrics/loss.png``) as an image artifact and a markdown artifact linking it.

``resume=True`` resumes every selected stage that has a checkpoint; a stage without one starts
from scratch (noted in the log); when no selected stage has a checkpoint it is an error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from pipeline.config import StrataConfig
from pipeline.corpus.dataset import load_manifest
from pipeline.corpus.manifest import unscored_genre_lines
from pipeline.errors import ParameterError, RunError
from pipeline.evaluation.assess import write_calibration
from pipeline.io import atomic_path
from pipeline.lock import die_with_parent, folder_lock, held_fds
from pipeline.run import (
    SCORE_KEY,
    check_run_config,
    config_path,
    list_checkpoints,
    loss_plot_path,
    parse_config,
    read_metrics,
    read_result,
    resolve_config,
    stage_name,
)
from pipeline.training.score_model import write_score_model


def parse_stages(stages: str | list | None, n_stages: int, score_tier: bool = False) -> list[int | str]:
    """``"all"`` or ``"score,0,2"`` (or a list) -> the score tier first (``"score"``), then sorted stage
    indices; ParameterError when invalid.  ``"all"`` includes the score tier when ``score_tier``."""
    if stages is None or (isinstance(stages, str) and stages.strip().lower() in ("all", "")):
        return ([SCORE_KEY] if score_tier else []) + list(range(n_stages))
    items = stages.split(",") if isinstance(stages, str) else list(stages)
    out: set[int] = set()
    with_score = False
    for item in items:
        if str(item).strip() == SCORE_KEY:
            with_score = True
            continue
        try:
            k = int(str(item).strip())
        except ValueError:
            raise ParameterError(f"stages={stages!r}: {item!r} is not a stage index or 'score' "
                                 f"(use 'all' or e.g. 'score,0,2')") from None
        if not 0 <= k < n_stages:
            raise ParameterError(f"stages={stages!r}: stage {k} is not in the config (stages 0..{n_stages - 1})")
        out.add(k)
    if not out and not with_score:
        raise ParameterError(f"stages={stages!r}: no stage selected")
    return ([SCORE_KEY] if with_score else []) + sorted(out)


def time_share(cfg: StrataConfig, k: int | str) -> float:
    """Stage k's share of the wall-clock budget (the score tier's from its own section)."""
    return cfg.score_tier.time_share if k == SCORE_KEY else cfg.stages[k].time_share


def _order(k: int | str) -> int:
    return -1 if k == SCORE_KEY else int(k)


def plan_lanes(cfg: StrataConfig, selected: list[int | str]) -> list[list[int | str]]:
    """Split the selected stages into ``train.parallel_stages`` lanes that run side by side.

    Stages in one lane run one after another.  Greedy by ``time_share`` (largest first, into the
    least loaded lane), so with shares 0.5/0.25/0.25 and two lanes: [[0], [1, 2]].
    """
    n = max(1, min(cfg.train.parallel_stages, len(selected)))
    lanes: list[list[int | str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for k in sorted(selected, key=lambda k: (-time_share(cfg, k), _order(k))):
        i = load.index(min(load))
        lanes[i].append(k)
        load[i] += time_share(cfg, k)
    return [sorted(lane, key=_order) for lane in lanes if lane]


def stage_minutes(cfg: StrataConfig, k: int | str, max_minutes: float | None,
                  lanes: list[list[int | str]] | None = None) -> float | None:
    """Wall-clock minutes for stage k: its ``time_share`` of the budget, scaled so the busiest
    lane fills the whole budget (stages in parallel lanes each get their full share)."""
    total = cfg.train.max_minutes if max_minutes is None else max_minutes
    if total is None:
        return None
    lanes = lanes or [[k]]
    busiest = max(sum(time_share(cfg, j) for j in lane) for lane in lanes)
    if len(lanes) == 1:
        busiest = max(busiest, 1.0)  # one lane: shares are fractions of the budget
    return float(total) * time_share(cfg, k) / busiest


def lane_threads(cfg: StrataConfig, n_lanes: int) -> int:
    """Torch threads per stage process when ``n_lanes`` stages train at once on this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, n_lanes))


def train_args(data: str, run: str, config_path: str, k: int | str, max_steps: int | None,
               minutes: float | None, resume: bool, extra_scores: str | None = None) -> list[str]:
    """Arguments of ``pipeline.training.train`` (the module's command line) for stage k."""
    cmd = ["-m", "pipeline.training", "--data", data, "--run", run, "--stage", str(k), "--config", config_path]
    if extra_scores is not None and k == SCORE_KEY:
        cmd += ["--extra-scores", extra_scores]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    if minutes is not None:
        cmd += ["--max-minutes", str(minutes)]
    if resume:
        cmd.append("--resume")
    return cmd


def stage_command(data: str, run: str, config_path: str, k: int | str, max_steps: int | None,
                  minutes: float | None, resume: bool, extra_scores: str | None = None) -> list[str]:
    """``python -m pipeline.training`` for one stage in its own process."""
    return [sys.executable, *train_args(data, run, config_path, k, max_steps, minutes, resume, extra_scores)]


def free_port() -> int:
    """A free local TCP port for the launcher's rendezvous (one machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(data: str, run: str, config_path: str, k: int | str, cfg: StrataConfig, max_steps: int | None,
                   minutes: float | None, resume: bool, extra_scores: str | None = None) -> list[str]:
    """``accelerate launch`` of ``pipeline.training.train`` with ``cfg.train.num_processes`` processes."""
    mp = cfg.train.mixed_precision
    try:
        import torch

        if not torch.cuda.is_available():
            mp = "no"
    except ImportError:
        pass
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(cfg.train.num_processes), "--num_machines", "1",
           "--mixed_precision", mp, "--dynamo_backend", "no",
           "--main_process_port", str(free_port())]
    return cmd + train_args(data, run, config_path, k, max_steps, minutes, resume, extra_scores)


_STAGE_PROCESSES: set[subprocess.Popen] = set()  # stage processes running now (lanes run them from threads)
_STAGE_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by stop_stage_processes: a lane that starts a stage now stops it at once


def _run_streaming(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run ``cmd``, passing its stderr through line by line; (exit code, last stderr lines)."""
    tail: list[str] = []
    # its own session: an interrupted flow stops the launcher and all its workers (stop_group); it dies
    # with this process (kill -9 included) and shares the run folder's lock while it lives
    with subprocess.Popen(cmd, stdout=None, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={**os.environ, **(env or {})}, preexec_fn=die_with_parent,
                          pass_fds=held_fds()) as proc:
        with _STAGE_LOCK:
            _STAGE_PROCESSES.add(proc)
            stopping = _STOPPING.is_set()
        try:
            if stopping:
                stop_group(proc)
            for line in proc.stderr:
                sys.stderr.write(line)
                tail = (tail + [line.rstrip("\n")])[-50:]
            code = proc.wait()
        except BaseException:
            stop_group(proc)
            raise
        finally:
            with _STAGE_LOCK:
                _STAGE_PROCESSES.discard(proc)
    return code, tail


def stop_stage_processes() -> int:
    """Stop every stage process still running; returns how many.  For Ctrl-C or SIGTERM in the main
    thread while lanes train: the signal reaches neither the lanes' threads nor their processes (a
    session of their own), and Prefect's task runner waits for those threads before the flow ends,
    so without this the command would train on, printing steps, until every lane's budget ran out."""
    with _STAGE_LOCK:
        _STOPPING.set()
        procs = list(_STAGE_PROCESSES)
    for proc in procs:  # all at once, then each waited for (one grace period in all)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
    for proc in procs:
        stop_group(proc)
    return len(procs)


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (a launcher and its workers), SIGKILL after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their launcher
            except OSError:  # none did: the group is gone
                pass
        return


@task(name="train-stage")
def train_stage_task(data: str, run: str, config_path: str, k: int | str, max_steps: int | None,
                     minutes: float | None, resume: bool, threads: int | None = None,
                     extra_scores: str | None = None) -> dict[str, Any]:
    """Train one stage; returns its summary.

    In this process by default; under ``accelerate launch`` when ``num_processes > 1``; in a
    process of its own with ``threads`` torch threads when stages train side by side.
    """
    # local: keeps accelerate out of `import flows.train` until this runs
    from pipeline.training.train import train_stage

    logger = get_run_logger()
    cfg = parse_config(config_path)  # the run's config.yaml, parsed once per process
    budget = "no time budget" if minutes is None else f"{minutes:.1f} min"
    logger.info(f"stage {k}: training ({budget}, {cfg.train.num_processes} process(es), resume={resume})")
    if cfg.train.num_processes <= 1 and threads is None:
        result = train_stage(data, run, cfg, k, max_steps=max_steps, max_minutes=minutes, resume=resume,
                             extra_scores=extra_scores)
    else:
        if cfg.train.num_processes > 1:
            cmd, env = launch_command(data, run, config_path, k, cfg, max_steps, minutes, resume, extra_scores), {}
        else:
            cmd = stage_command(data, run, config_path, k, max_steps, minutes, resume, extra_scores)
            env = {"STRATA_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        logger.info("running: " + " ".join(cmd))
        code, tail = _run_streaming(cmd, env)
        if code != 0 and _STOPPING.is_set():
            raise RunError(f"stage {k}: stopped (the command was interrupted)")
        if code != 0:
            errors = [ln for ln in tail if ln.startswith("error: ")]
            raise RunError(errors[-1][7:] if errors else f"stage {k}: accelerate launch failed (exit {code}): "
                           + " | ".join(tail[-3:]))
        result = read_result(run, k)
    logger.info(f"stage {k}: {result['steps']} steps, best valid {result['best_valid_bits']:.3f} "
                f"bits/{'event' if k == SCORE_KEY else 'sample'} "
                f"(step {result['best_step']}), stopped by {result['stopped']}")
    return result


def plot_losses(run: Path, stages: list[int | str], path: Path | None = None) -> Path:
    """Training loss and validation bits per stage vs step (``run``'s metrics) -> ``path`` (default
    ``run/metrics/loss.png``)."""
    # local: keeps matplotlib out of `import flows.train` until this runs
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k in stages:
        rows, name = read_metrics(run, k), stage_name(k)
        tr = [(r["step"], r[f"{name}/loss"]) for r in rows if f"{name}/loss" in r]
        va = [(r["step"], r[f"{name}/valid_bits"]) for r in rows if f"{name}/valid_bits" in r]
        if tr:
            line, = ax.plot(*zip(*tr), label=f"{_label(k)} train", alpha=0.8)
            color = line.get_color()
        else:
            color = None
        if va:
            ax.plot(*zip(*va), "o--", color=color, label=f"{_label(k)} valid")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per sample (score tier: per event)")
    ax.set_title("Strata training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = loss_plot_path(run) if path is None else Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def _label(k: int | str) -> str:
    return "score tier" if k == SCORE_KEY else f"stage {k}"


def _artifacts(run: Path, results: dict[int, dict], png: Path) -> None:
    rows = [{"stage": k, "rate": r.get("rate"), "steps": r["steps"],
             "best_valid_bits": round(r["best_valid_bits"], 4), "best_step": r["best_step"],
             "final_valid_bits": round(r["final_valid_bits"], 4), "final_loss": round(r["final_loss"], 4),
             "samples_per_second": round(r["samples_per_second"], 1), "stopped": r["stopped"]}
            for k, r in sorted(results.items(), key=lambda kv: _order(kv[0]))]
    create_table_artifact(rows, key="train-bits", description="Bits per sample per stage (validation, EMA weights)")
    url = png.resolve().as_uri()
    create_image_artifact(image_url=url, key="train-loss-curve", description="Training loss and validation bits")
    table = ["| stage | steps | best valid bits | final valid bits | final loss | stopped |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['stage']} | {r['steps']} | {r['best_valid_bits']} | {r['final_valid_bits']} | {r['final_loss']} | "
              f"{r['stopped']} |" for r in rows]
    md = "\n".join([f"# Training: {run}", "", *table, "", f"![loss curves]({url})", "",
                    f"Loss curves: [{png.name}]({url}) (`{png}`)"])
    create_markdown_artifact(md, key="train-summary", description="Training summary with loss curves")


def _run_extras(data: str, run_dir: Path, logger) -> None:
    """What generation reads from the run besides its stages: the genres' score model
    (pipeline/training/score_model.py) and the noise threshold of the diagnostics (pipeline/evaluation/assess.py)."""
    path = write_score_model(data, run_dir)
    logger.info(f"score model: {path or 'none (no training track has a score)'}")
    write_calibration(data, run_dir)


@flow(name="train")
def train_flow(data: str, run: str, config: str | None = None, stages: str = "all", max_steps: int | None = None,
               resume: bool = False, max_minutes: float | None = None,
               extra_scores: str | None = None) -> dict[str, Any]:
    """Train the selected stages one after another; returns {"run", "stages": {k: summary}, "loss_png"}."""
    _STOPPING.clear()
    with folder_lock(run, "strata train"):  # one writer per run folder (pipeline.lock)
        try:
            return _train(data, run, config, stages, max_steps, resume, max_minutes, extra_scores)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (flows.signals): before the task runner waits for the lanes
            stop_stage_processes()
            raise


def _train(data: str, run: str, config: str | None, stages: str, max_steps: int | None, resume: bool,
           max_minutes: float | None, extra_scores: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    run_dir = Path(run)
    if max_steps is not None and max_steps < 1:
        raise ParameterError(f"max_steps={max_steps}: must be >= 1")
    if max_minutes is not None and max_minutes <= 0:
        raise ParameterError(f"max_minutes={max_minutes}: must be > 0")
    cfg = resolve_config(config, run_dir)
    manifest = load_manifest(data)  # a clear DatasetError before anything is written
    has_scores = extra_scores is not None or any(t.get("roll") and t["split"] == "train" for t in manifest["tracks"])
    selected = parse_stages(stages, len(cfg.stages), score_tier=cfg.score_tier.enabled and has_scores)
    if extra_scores is not None and not Path(extra_scores).is_dir():
        raise ParameterError(f"{extra_scores}: --extra-scores is not a folder")
    if cfg.score_tier.enabled and not has_scores and SCORE_KEY not in selected:
        logger.info("score tier: not trained (no training track has a score and no --extra-scores): "
                    "genre-only pieces get no score")

    for line in unscored_genre_lines(manifest):
        logger.warning(line)
        print(f"train: {line}", flush=True)
    with_ckpt = {k for k in selected if list_checkpoints(run_dir, k)}
    if resume and not with_ckpt:
        raise RunError(f"{run}: --resume but no checkpoint for stage(s) {','.join(map(str, selected))}")
    check_run_config(run_dir, cfg, resume, write=True)
    config_file = str(config_path(run_dir))
    lanes = plan_lanes(cfg, selected)
    threads = lane_threads(cfg, len(lanes)) if len(lanes) > 1 else None
    if len(lanes) > 1:
        logger.info(f"training {len(lanes)} lanes side by side: {lanes} ({threads} thread(s) each)")
    futures: dict[int, Any] = {}
    for lane in lanes:
        previous = None
        for k in lane:
            resume_k = resume and k in with_ckpt
            if resume and not resume_k:
                logger.info(f"stage {k}: no checkpoint to resume, starting from scratch")
            args = (data, run, config_file, k, max_steps, stage_minutes(cfg, k, max_minutes, lanes), resume_k)
            if len(lanes) == 1:
                futures[k] = train_stage_task(*args, extra_scores=extra_scores)
            else:  # one chain of tasks per lane; lanes run concurrently
                futures[k] = train_stage_task.submit(*args, threads, extra_scores=extra_scores,
                                                     wait_for=[previous] if previous else None)
                previous = futures[k]
    results: dict[int | str, dict] = {}
    for k in selected:
        result = futures[k] if len(lanes) == 1 else futures[k].result()
        result["rate"] = None if k == SCORE_KEY else cfg.stages[k].rate
        results[k] = result
    png = plot_losses(run_dir, selected)
    _artifacts(run_dir, results, png)
    _run_extras(data, run_dir, logger)
    print(f"train: run {run_dir} (stages/, metrics/loss.png)", flush=True)
    return {"run": str(run_dir), "stages": {str(k): r for k, r in results.items()}, "loss_png": str(png)}
