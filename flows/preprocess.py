"""Prefect flow ``preprocess``: raw folder -> dataset folder (DESIGN 5).

One task per file, cached on the file's content hash + the MIDI's content hash + the
preprocessing settings + the score estimator (method, version; ``preprocess.estimate_scores``)
+ the output folder + the track id inputs (genre, path), with results
persisted, so a rerun after a crash only does the files that did not finish.  A cached result
is trusted only when its output files still exist; otherwise the file is recomputed.
Retries are for I/O errors (``OSError``) only; bad input is returned as a skip record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.config import DataConfig, load_config
from pipeline.corpus import preprocess as pp
from pipeline.corpus.inputs import discover_inputs
from pipeline.corpus.manifest import roll_counts, write_dataset
from pipeline.corpus.transcribe import estimator_version
from pipeline.errors import ParameterError, StrataError
from pipeline.lock import folder_lock

WORKERS = 2  # measured on 2 cores: see bench/preprocess.py


def file_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key of one file's task; None (no caching) when the input cannot be read."""
    try:
        audio = Path(parameters["audio_path"])
        midi = parameters.get("midi_path")
        parts = [
            pp.file_hash(audio),
            pp.file_hash(midi) if midi else "no-midi",
            pp.settings_hash(parameters["data_cfg"]),
            "no-midi-roll" if midi else estimator_version(parameters.get("estimate")),
            str(Path(parameters["out_dir"]).resolve()),
            parameters["genre"],
            str(audio.absolute()),
        ]
    except OSError:
        return None
    return "strata-preprocess-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the task failed with an OSError (a flaky disk), never for bad input."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable state is not worth a retry
        return False
    return isinstance(exc, OSError)


@task(
    name="preprocess-file",
    cache_key_fn=file_cache_key,
    persist_result=True,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_on_io_error,
)
def preprocess_file_task(audio_path: str, genre: str, midi_path: str | None, out_dir: str,
                         data_cfg: DataConfig, estimate: str | None = None) -> dict[str, Any]:
    """{"track": record} or {"skip": {"path", "genre", "reason"}} for one raw file."""
    try:
        return {"track": pp.preprocess_file(audio_path, genre, midi_path, out_dir, data_cfg, estimate)}
    except StrataError as e:
        return {"skip": pp.skip_record(audio_path, genre, e)}


def _run_files(inputs: list, out: Path, data_cfg: DataConfig,
               estimate: str | None) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Submit one task per file; collect records, skips and cached/computed counts."""
    logger = get_run_logger()
    futures = [
        preprocess_file_task.submit(str(a), g, None if m is None else str(m), str(out), data_cfg, estimate)
        for a, g, m in inputs
    ]
    tracks, skipped, counts = [], [], {"cached": 0, "computed": 0}
    for i, ((audio, genre, midi), fut) in enumerate(zip(inputs, futures), start=1):
        result, how = _settle(fut, audio, genre, midi, out, data_cfg, estimate)
        counts["cached" if how == "cached" else "computed"] += 1
        if "track" in result:
            tracks.append(result["track"])
            rec = result["track"]
            line = (f"[{i}/{len(inputs)}] ok ({how}) {genre}/{Path(audio).name}: {rec['seconds']:.1f} s, "
                    f"roll: {rec.get('roll_source') or rec.get('no_roll') or 'none'}")
        else:
            skipped.append(result["skip"])
            line = f"[{i}/{len(inputs)}] skipped {genre}/{Path(audio).name}: {result['skip']['reason']}"
        logger.info(line)
        _print_counter(i, len(inputs), len(tracks), len(skipped))
    return tracks, skipped, counts


def mark_excerpts(tracks: list[dict], excerpts: set[Path]) -> None:
    """Track records of the audio files ``excerpts`` names (metadata.csv's excerpt column) become excerpts, as
    a cropped file or a marked MIDI file makes them (``preprocess_file``); outside the cached task, so a
    changed column needs no recomputation."""
    listed = {str(Path(p).absolute()) for p in excerpts}
    for rec in tracks:
        if rec["source"] in listed:
            rec["excerpt"] = True


def _print_counter(done: int, total: int, ok: int, skipped: int) -> None:
    """One progress line, rewritten in place on a terminal (the logger has the details)."""
    text = f"preprocess: {done}/{total} files ({ok} ok, {skipped} skipped)"
    if sys.stdout.isatty():
        print("\r" + text, end="\n" if done == total else "", flush=True)
    elif done == total or done % 10 == 0:
        print(text, flush=True)


def _settle(fut: Any, audio: Path, genre: str, midi: Path | None, out: Path, data_cfg: DataConfig,
            estimate: str | None) -> tuple[dict, str]:
    """Result of one task future; a cached track whose files are gone is recomputed."""
    fut.wait()
    state = fut.state
    if not state.is_completed():
        exc = state.result(raise_on_failure=False)
        err = exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
        return {"skip": pp.skip_record(audio, genre, err)}, "failed"
    result = state.result()
    cached = state.name == "Cached"
    if cached and "track" in result and not pp.outputs_exist(out, result["track"]):
        fresh = preprocess_file_task.with_options(refresh_cache=True)
        state = fresh(str(audio), genre, None if midi is None else str(midi), str(out), data_cfg, estimate,
                      return_state=True)
        if not state.is_completed():
            return {"skip": pp.skip_record(audio, genre, state.result(raise_on_failure=False))}, "failed"
        return state.result(), "recomputed"
    return result, "cached" if cached else "computed"


def _summary_markdown(written: dict, counts: dict[str, int]) -> str:
    """The artifact: tracks, hours per genre and split, skipped files with reasons."""
    report = written["report"]
    hours = report["hours"]
    lines = [
        f"# Preprocess: {report['counts']['tracks']} tracks, {report['counts']['skipped']} skipped",
        f"{hours['total']:.3f} h in all; {counts['cached']} files from cache, {counts['computed']} computed.",
        f"Scores: {report['counts']['with_midi']} from MIDI, {report['counts']['estimated_rolls']} estimated from "
        f"the audio, {report['counts']['without_roll']} without a roll.",
        "", "| genre | train h | valid h | test h | total h |", "|---|---|---|---|---|",
    ]
    for g, per in hours["per_genre_split"].items():
        lines.append(f"| {g} | {per['train']:.4f} | {per['valid']:.4f} | {per['test']:.4f} "
                     f"| {hours['per_genre'][g]:.4f} |")
    s = hours["per_split"]
    lines.append(f"| **all** | {s['train']:.4f} | {s['valid']:.4f} | {s['test']:.4f} | {hours['total']:.4f} |")
    lines += ["", "## Skipped files", ""]
    lines += [f"- `{x['path']}`: {x['reason']}" for x in report["skipped"]] or ["none"]
    lines += ["", "## Tracks without a roll", ""]
    lines += [f"- `{x['path']}`: {x['reason']}" for x in report["no_roll"]] or ["none"]
    return "\n".join(lines)


def _artifacts(written: dict, counts: dict[str, int]) -> None:
    create_markdown_artifact(_summary_markdown(written, counts), key="preprocess-summary",
                             description="Tracks, hours per genre and split, skipped files")
    rows = [{"path": x["path"], "genre": x["genre"] or "", "reason": x["reason"]} for x in written["report"]["skipped"]]
    create_table_artifact(rows or [{"path": "", "genre": "", "reason": "no files skipped"}],
                          key="preprocess-skipped", description="Skipped files and reasons")


@flow(name="preprocess", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS))
def preprocess_flow(raw: str, out: str, config: str | None = None,
                    estimate_scores: bool | None = None) -> dict[str, Any]:
    """Raw folder -> dataset folder; returns a summary dict (paths, counts, hours).
    ``estimate_scores`` overrides the config's ``preprocess.estimate_scores`` (``--no-estimate``)."""
    with folder_lock(out, "strata preprocess"):  # one writer per dataset folder (pipeline.lock)
        return _preprocess(raw, out, config, estimate_scores)


def _preprocess(raw: str, out: str, config: str | None, estimate_scores: bool | None) -> dict[str, Any]:
    cfg = load_config(config)
    if estimate_scores is not None:
        cfg = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, estimate_scores=estimate_scores))
    raw_dir, out_dir = Path(raw), Path(out)
    if not raw_dir.is_dir():
        raise ParameterError(f"{raw}: raw folder not found")
    skipped: list[dict] = []
    excerpts: set[Path] = set()  # recordings metadata.csv marks as cuts of longer pieces
    inputs = discover_inputs(raw_dir, skipped, excerpts)
    if not inputs:
        raise ParameterError(f"{raw}: no audio files found (layout RAW/<genre>/<name>.wav or RAW/metadata.csv)")
    get_run_logger().info("preprocess: %d audio files in %s", len(inputs), raw_dir)
    tracks, bad, counts = _run_files(inputs, out_dir, cfg.data, cfg.preprocess.estimator)
    mark_excerpts(tracks, excerpts)
    written = write_dataset(out_dir, tracks, skipped + bad, cfg.data, seed=cfg.train.seed)
    _artifacts(written, counts)
    report = written["report"]
    return {
        "out": str(out_dir),
        "manifest": str(out_dir / "manifest.json"),
        "report": str(out_dir / "report.json"),
        "tracks": report["counts"]["tracks"],
        "skipped": report["counts"]["skipped"],
        "hours": report["hours"]["total"],
        "rolls": roll_counts(written["manifest"]),
        "excerpts": report["counts"]["excerpts"],  # cuts of longer pieces: no END for the score tier
        "without_roll": [f"{x['path']}: {x['reason']}" for x in report["no_roll"]],
        **counts,
    }
