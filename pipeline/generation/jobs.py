"""Job folders (DESIGN 7): ``audio.wav``, ``tier_<rate>.wav``, ``spectrogram.png`` and ``meta.json``
per variation, each written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.corpus.audio import mulaw_decode
from pipeline.corpus.score_events import events_seconds, events_to_midi, roll_to_events
from pipeline.evaluation.assess import generation_diagnostics
from pipeline.generation import spectrogram
from pipeline.generation.plan import GenerateParams, Plan
from pipeline.generation.spectrogram import plot_roll
from pipeline.io import atomic_path, atomic_write_json
from pipeline.lock import pid_exists
from pipeline.run import LoadedRun
from pipeline.runtime import generate_workers, package_version, step_threads


@dataclass
class CascadeResult:
    """What the cascade gave (``pipeline.generation.generate.run_cascade``), for the job folders."""

    tiers: dict[int, Any]  # {rate: (B, n_k) tensor} codes or floats, padded to the longest stream
    lengths: list[int]  # stage-0 samples of each stream
    timings: list[dict]  # per stage: wall, samples, rtf, samples/s


# ----------------------------------------------------------------------------- outputs


def _to_audio(x, cfg) -> np.ndarray:
    """(n,) codes or floats -> float32 audio in [-1, 1]."""

    a = x.numpy()
    if a.dtype.kind == "f":
        return np.clip(a.astype(np.float32), -1.0, 1.0)
    return mulaw_decode(a, cfg.data.mu_bits)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV, atomically."""
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), audio, rate, subtype="PCM_16", format="WAV")


def job_names(seed: int, count: int) -> list[str]:
    """Program-made job folder names: ``job-<utc>-s<seed>-<random>-v<i>`` (never user strings)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    token = uuid.uuid4().hex[:8]
    return [f"job-{stamp}-s{seed}-{token}-v{i}" for i in range(count)]


def write_job(folder: Path, i: int, run: LoadedRun, plan: Plan, p: GenerateParams, res: CascadeResult,
              total_wall: float) -> dict:
    """Write one variation's files into ``folder``; returns its meta dict."""

    cfg, rates = run.cfg, run.rates
    n0 = res.lengths[i]
    audios = {}
    for rate in rates:
        n = n0 * rate // rates[0]  # crop this stream to its own length
        audio = audios[rate] = _to_audio(res.tiers[rate][i, :n], cfg)
        write_wav(folder / f"tier_{rate}.wav", audio, rate)
    fine = rates[-1]
    write_wav(folder / "audio.wav", audio, fine)
    roll = None if plan.roll is None else plan.roll[:, :, : n0 * cfg.data.roll_fps // rates[0]]
    spectrogram.plot_spectrogram(audio, fine, folder / "spectrogram.png", roll=roll, roll_fps=cfg.data.roll_fps,
                                 title=f"{folder.name.removeprefix('.tmp-')} ({len(audio) / fine:.2f} s)",
                                 roll_title=f"piano roll (the score: {plan.roll_source})")
    score = write_score(folder, plan, cfg.data.roll_fps)
    seconds = len(audio) / fine
    ended = plan.free_length and n0 < plan.n0
    meta = {
        "job": folder.name.removeprefix(".tmp-"),
        "variation": i,
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in p.model_dump().items()},
        "seed": p.seed,
        "run": str(run.path),
        "genre_id": plan.genre_id,
        "genres": run.genres,
        "rates": rates,
        "seconds": seconds,
        "prompt_seconds": plan.prompt_seconds,
        "midi_seconds": plan.midi_seconds,
        "roll_source": plan.roll_source,
        "score_file": score,
        "score_note": plan.score_note,
        "score_length": plan.score_length,
        "score_draws": plan.score_draws,
        "length_decided_by_model": plan.free_length,
        "ended_by_model": ended,
        "stages": run.stage_info,
        "package_version": package_version(),
        "timings": {
            "stages": res.timings,
            "total_wall_seconds": round(total_wall, 4),
            "real_time_factor": total_wall / seconds if seconds else None,
            "batch": p.count,
            "threads": step_threads(),
            "workers": generate_workers(),  # groups of streams (the fused engine)
        },
        "guidance_formula": "l = l_u + (1 + W) * (l_c - l_u)",
        "created_utc": datetime.now(timezone.utc).isoformat(),
        "diagnostics": job_diagnostics(audios, run, plan, p, {
            "seconds": seconds, "length_decided_by_model": plan.free_length, "ended_by_end_class": ended}),
    }
    atomic_write_json(folder / "meta.json", meta)
    return meta


def write_score(folder: Path, plan: Plan, fps: int) -> str | None:
    """``score.mid``: the score the piece rendered (the score tier's events, or the roll of a MIDI file, an
    audio prompt's notes or the chain); None when the piece had no score."""
    if plan.score_events is not None:
        events = plan.score_events
    elif plan.roll is not None and plan.roll[0].any():
        events = roll_to_events(plan.roll, fps)
    else:
        return None
    events_to_midi(events, folder / "score.mid")
    return "score.mid"


def write_score_jobs(run: LoadedRun, plans: list[Plan], p: GenerateParams, walls: list[float]) -> list[Path]:
    """``--score-only``: one job folder per plan with ``score.mid``, ``score.png`` and ``meta.json``."""
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finals = []
    for i, (name, plan, wall) in enumerate(zip(job_names(p.seed, len(plans)), plans, walls)):
        tmp = out / f".tmp-{name}"
        try:
            tmp.mkdir()
            (tmp / WRITER).write_text(str(os.getpid()))
            score = write_score(tmp, plan, run.cfg.data.roll_fps)
            if plan.roll is not None:
                plot_roll(plan.roll, run.cfg.data.roll_fps, tmp / "score.png", f"{name}: {plan.roll_source}")
            seconds = events_seconds(plan.score_events) if plan.score_events else (
                0.0 if plan.roll is None else plan.roll.shape[2] / run.cfg.data.roll_fps)
            atomic_write_json(tmp / "meta.json", {
                "job": name, "variation": i, "score_only": True, "seed": p.seed + i,
                "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in p.model_dump().items()},
                "run": str(run.path), "genre_id": plan.genre_id, "genres": run.genres,
                "roll_source": plan.roll_source, "score_file": score, "score_seconds": seconds,
                "score_length": plan.score_length, "score_draws": plan.score_draws,
                "score_events": None if plan.score_events is None else len(plan.score_events),
                "timings": {"score_wall_seconds": round(wall, 4)}, "package_version": package_version(),
                "created_utc": datetime.now(timezone.utc).isoformat()})
            (tmp / WRITER).unlink()
            os.rename(tmp, out / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finals.append(out / name)
    return finals


def job_diagnostics(audios: dict[int, np.ndarray], run: LoadedRun, plan: Plan, p: GenerateParams,
                    length: dict) -> dict:
    """``pipeline.evaluation.assess`` diagnostics of one variation ({rate: float audio}); a failure is recorded
    in place of the numbers, never lost work."""

    real = None if plan.resynth_tiers is None else {
        r: mulaw_decode(c, run.cfg.data.mu_bits) for r, c in plan.resynth_tiers.items()}
    try:
        return generation_diagnostics(audios, midi=p.midi, midi_offset=plan.prompt_seconds, run_dir=run.path,
                                      length=length, resynth=real,
                                      resynth_source=None if p.resynth is None else str(p.resynth))
    except Exception as e:  # noqa: BLE001 - diagnostics must not cost the generated piece
        return {"error": f"{type(e).__name__}: {e}", "length": length}


WRITER = ".writer"  # in an unfinished job folder: the pid writing it
STALE_SECONDS = 3600.0  # an unfinished folder without a writer pid, older than this, is abandoned


def sweep_unfinished(out: Path) -> list[Path]:
    """Remove the ``.tmp-`` job folders of writers that died (``kill -9``); a live writer's stay.
    Readers never see them: every listing of jobs skips names starting with a dot."""
    import time

    gone = []
    for tmp in out.glob(".tmp-job-*"):
        try:
            pid = int((tmp / WRITER).read_text().strip())
            dead = not pid_exists(pid)
        except (OSError, ValueError):
            try:
                dead = time.time() - tmp.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
        if dead:
            shutil.rmtree(tmp, ignore_errors=True)
            gone.append(tmp)
    return gone


def write_jobs(run: LoadedRun, plan: Plan, p: GenerateParams, res: CascadeResult, total: float) -> list[Path]:
    """Each job under a temporary name, renamed into place when complete (Ctrl-C leaves none)."""
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_unfinished(out)
    names = job_names(p.seed, p.count)
    tmps = [out / f".tmp-{name}" for name in names]
    try:
        for i, tmp in enumerate(tmps):
            tmp.mkdir()
            (tmp / WRITER).write_text(str(os.getpid()))
            write_job(tmp, i, run, plan, p, res, total)
        finals = []
        for name, tmp in zip(names, tmps):
            final = out / name
            (tmp / WRITER).unlink()
            os.rename(tmp, final)  # a fresh name (job_names): never replaces another job
            finals.append(final)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return finals
