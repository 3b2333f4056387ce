"""Preprocessing speed in seconds of audio per wall second (goal: >= 200x real time on 2 cores).

    python bench/preprocess.py [--data RAW | --raw RAW] [--json FILE] [--seconds 120] [--repeats 3]
                               [--no-flow]

Without a corpus folder, synthesises ``--seconds`` of test audio (44.1 kHz stereo files, half
with MIDI scores) in a temporary folder.  A corpus that is not 44.1 kHz stereo (the demo corpus
is rendered at 16 kHz mono, which needs no resampling) is also timed as a 44.1 kHz stereo copy
(each file resampled with soxr and written as two channels), so both cases are reported.

Tracks without MIDI get a roll estimated from their audio (the config's ``preprocess.transcription``,
basic-pitch), as ``strata preprocess`` does, unless ``--no-estimate``.

Rows per input: the pipeline without Prefect (sequential and 2 threads), and the Prefect flow
(2-thread task runner and sequential; not with ``--no-flow``), each the median wall time of
``--repeats`` runs into a fresh output folder, so nothing comes from the cache.  The flow rows
are timed after one warm-up flow, so Prefect's start-up is not counted (bench/orchestration.py
measures it).  ``make bench`` runs ``--data demo/raw --no-flow``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import machine_info, median, run_info  # noqa: E402  (bench/machine.py)
from pipeline.io import atomic_write_json  # noqa: E402


def synth_corpus(raw: Path, seconds: float, per_file: float = 10.0, sr: int = 44100) -> Path:
    """Harmonic tones with vibrato and noise, stereo, ``per_file`` s each; odd files get MIDI."""
    rng = np.random.default_rng(0)
    n_files = max(1, int(round(seconds / per_file)))
    for i in range(n_files):
        genre = ("folk", "chorale", "jazz")[i % 3]
        t = np.arange(int(per_file * sr)) / sr
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(np.sin(2 * np.pi * f0 * h * t + 0.3 * np.sin(2 * np.pi * 5 * t)) / h for h in range(1, 6))
        x = 0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) + 0.01 * rng.standard_normal(len(t))
        stereo = np.stack([x, 0.8 * x], axis=1).astype(np.float32)  # (n, 2)
        (raw / genre).mkdir(parents=True, exist_ok=True)
        sf.write(str(raw / genre / f"take{i:03d}.wav"), stereo, sr)
        if i % 2:
            write_score(raw / genre / f"take{i:03d}.mid", per_file, mido)
    return raw


def write_score(path: Path, seconds: float, mido) -> None:
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for k in range(int(seconds * 2)):
        track.append(mido.Message("note_on", note=48 + k % 24, velocity=80, time=0))
        track.append(mido.Message("note_off", note=48 + k % 24, velocity=0, time=480))
    mid.save(str(path))


def audio_seconds(inputs) -> float:
    return sum(sf.info(str(a)).duration for a, _, _ in inputs)


def time_pipeline(inputs, out: Path, data_cfg, workers: int, estimate: str | None = None) -> float:
    """Wall seconds of preprocess_file over every input (no Prefect), estimating a roll with ``estimate``
    (the transcription method) for tracks without MIDI, as ``strata preprocess`` does."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.corpus import preprocess as pp

    def one(item):
        try:
            return pp.preprocess_file(item[0], item[1], item[2], out, data_cfg, estimate)
        except pp.StrataError as e:
            return e

    start = time.perf_counter()
    if workers == 1:
        results = [one(x) for x in inputs]
    else:
        with ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(one, inputs))
    wall = time.perf_counter() - start
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        print(f"warning: {len(bad)} files skipped, e.g. {bad[0]}", file=sys.stderr)
    return wall


def time_flow(raw: Path, out: Path, workers: int) -> float:
    """Wall seconds of the preprocess flow (server already warm)."""
    # local: keeps prefect, torch out of the script's start-up (--help, bad arguments)
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.preprocess import preprocess_flow

    flow = preprocess_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    start = time.perf_counter()
    flow(str(raw), str(out))
    return time.perf_counter() - start


def input_format(inputs) -> str:
    """"16 kHz mono", "44.1 kHz stereo", or "mixed" for a corpus of several formats."""
    kinds = set()
    for a, _, _ in inputs:
        info = sf.info(str(a))
        kinds.add(f"{info.samplerate / 1000:g} kHz " + {1: "mono", 2: "stereo"}.get(info.channels,
                                                                                    f"{info.channels} ch"))
    return kinds.pop() if len(kinds) == 1 else "mixed"


def stereo_44k_copy(inputs, dest: Path) -> Path:
    """Every input resampled to 44.1 kHz (soxr, high quality) as 16-bit stereo WAV, MIDI beside it."""
    import shutil


    for audio, genre, midi in inputs:
        x, sr = sf.read(str(audio), dtype="float32", always_2d=True)  # (n, channels)
        mono = x.mean(axis=1)
        y = soxr.resample(mono, sr, 44100, quality="HQ") if sr != 44100 else mono
        stereo = np.stack([y, 0.8 * y], axis=1)  # (n, 2)
        (dest / genre).mkdir(parents=True, exist_ok=True)
        sf.write(str(dest / genre / (Path(audio).stem + ".wav")), stereo, 44100, subtype="PCM_16")
        if midi:
            shutil.copy(midi, dest / genre / (Path(audio).stem + ".mid"))
    return dest


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", "--raw", dest="raw", help="raw corpus folder (RAW/<genre>/<file>)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--seconds", type=float, default=120.0, help="audio to synthesise without --data")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row; the row is their median")
    ap.add_argument("--no-flow", action="store_true", help="skip the Prefect rows")
    ap.add_argument("--no-estimate", action="store_true",
                    help="no rolls estimated for tracks without MIDI (as `strata preprocess --no-estimate`)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-pre-"))
    if "PREFECT_API_URL" not in os.environ:  # a private ephemeral server, not the user's
        os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.config import load_config
    from pipeline.corpus.inputs import discover

    raw = Path(args.raw) if args.raw else synth_corpus(tmp / "raw", args.seconds)
    cfg = load_config(None)
    inputs, _ = discover(raw)
    corpora = [(input_format(inputs), raw, inputs)]
    if corpora[0][0] != "44.1 kHz stereo":
        copy = stereo_44k_copy(inputs, tmp / "raw-44k-stereo")
        corpora.append(("44.1 kHz stereo", copy, discover(copy)[0]))
    rows = []

    def row(name, fmt, items, workers, walls):
        seconds = audio_seconds(items)
        wall = median(walls)
        rows.append({"name": name, "input": fmt, "workers": workers, "files": len(items),
                     "audio_seconds": round(seconds, 2), "wall_seconds": round(wall, 3),
                     "walls": [round(w, 3) for w in walls], "realtime_factor": round(seconds / wall, 1)})

    estimate = None if args.no_estimate else cfg.preprocess.estimator
    time_pipeline(inputs[:1], tmp / "warm", cfg.data, 1, estimate)  # imports, soxr plans, the estimator's model
    n = 0
    for fmt, folder, items in corpora:
        for workers in (1, 2):
            walls = []
            for _ in range(args.repeats):
                n += 1
                walls.append(time_pipeline(items, tmp / f"pipe{n}", cfg.data, workers, estimate))
            row("pipeline", fmt, items, workers, walls)
        if not args.no_flow:
            time_flow(folder, tmp / f"flow-warm{n}", 2)  # starts Prefect's API when needed; not counted
            for workers in (2, 1):
                walls = []
                for _ in range(args.repeats):
                    n += 1
                    walls.append(time_flow(folder, tmp / f"flow{n}", workers))
                row("flow", fmt, items, workers, walls)
    result = {"machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]), "repeats": args.repeats,
              "corpus": str(raw), "estimate": estimate,
              "tracks_without_midi": sum(m is None for _, _, m in inputs), "results": rows}
    print(f"\n{'name':<10}{'input':>17}{'workers':>8}{'files':>7}{'audio s':>10}{'wall s':>9}{'x realtime':>12}")
    for r in rows:
        print(f"{r['name']:<10}{r['input']:>17}{r['workers']:>8}{r['files']:>7}{r['audio_seconds']:>10.1f}"
              f"{r['wall_seconds']:>9.2f}{r['realtime_factor']:>12.1f}")
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
