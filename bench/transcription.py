"""Note F1 of the score estimators (pipeline/corpus/transcribe.py) where the truth is known (issue 20).

For each test piece of the demo (``split == "test"`` in ``--dataset``'s manifest; its audio and
aligned MIDI in ``--data``), each estimator (basic-pitch, the CQT baseline) transcribes:

- ``demo``: the demo's own rendering (FluidR3_GM),
- ``other_soundfont``: the same MIDI rendered with TimGM6mb (pipeline/corpus/midi.py ``render_midi``),
- ``noise_20db``: the demo rendering plus white noise at 20 dB SNR,
- ``reverb``: the demo rendering through a simple reverb (exponentially decaying noise, RT60 0.6 s,
  half wet).

Scores: mir_eval note precision / recall / F1, onsets within 50 ms, offsets ignored, exact pitch
and pitch class; pieces of at least ``--min-seconds`` s, averaged over pieces.  Also the
estimator's speed (x real time, one ONNX thread; the load average is recorded beside it).

    python bench/transcription.py --data demo/raw --json docs/results/transcription.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from pipeline.corpus.audio import load_audio, resample, to_mono  # noqa: E402
from pipeline.corpus.midi import find_soundfont, read_midi, render_midi  # noqa: E402
from pipeline.corpus.transcribe import METHODS, estimate_notes, estimator_version, note_f1  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402

RATE = 16000
CONDITIONS = ("demo", "other_soundfont", "noise_20db", "reverb")
OTHER_SOUNDFONT = "TimGM6mb.sf2"


def test_pieces(data: Path, dataset: Path) -> list[tuple[str, Path, Path]]:
    """(track id, audio, MIDI) of the manifest's test split, found under ``data`` as <genre>/<name>."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    out = []
    for t in manifest["tracks"]:
        if t["split"] != "test" or not t.get("midi"):
            continue
        src, mid = Path(t["source"]), Path(t["midi"])
        out.append((t["id"], data / src.parent.name / src.name, data / mid.parent.name / mid.name))
    return sorted(out)


def read_audio(path: Path) -> np.ndarray:
    x, sr = load_audio(path)
    return resample(to_mono(x), sr, RATE)  # (n,)


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at ``snr_db`` below the signal's mean power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(x.astype(np.float64) ** 2))
    return (x + rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def reverb(x: np.ndarray, rt60: float = 0.6, wet: float = 0.5, seed: int = 0) -> np.ndarray:
    """Convolution with exponentially decaying white noise (RT60 ``rt60`` s), mixed ``wet``, same peak."""
    # local: keeps scipy out of the script's start-up (--help, bad arguments)
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * RATE)) / RATE
    ir = rng.standard_normal(len(t)) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2))
    y = (1 - wet) * x + wet * fftconvolve(x, ir)[: len(x)]
    return (y * np.max(np.abs(x)) / max(np.max(np.abs(y)), 1e-9)).astype(np.float32)


def condition_audio(cond: str, audio: Path, midi: Path, tmp: Path, seed: int) -> np.ndarray:
    if cond == "other_soundfont":
        font = find_soundfont(Path(find_soundfont()).parent / OTHER_SOUNDFONT)
        return read_audio(render_midi(midi, tmp / f"{midi.stem}-other.wav", sr=RATE, soundfont=font))
    x = read_audio(audio)
    if cond == "noise_20db":
        return add_noise(x, 20.0, seed)
    if cond == "reverb":
        return reverb(x, seed=seed)
    return x


def mean_scores(rows: list[dict]) -> dict:
    keys = ("precision", "recall", "f1")
    return {kind: {k: round(float(np.mean([r[kind][k] for r in rows])), 4) for k in keys}
            for kind in ("exact", "pitch_class")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="raw demo corpus: <genre>/<name>.wav + .mid")
    ap.add_argument("--dataset", type=Path, default=None, help="preprocessed dataset whose manifest names "
                    "the test split (default: data/ beside --data)")
    ap.add_argument("--min-seconds", type=float, default=12.0, help="score pieces at least this long")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    dataset = args.dataset or args.data.parent / "data"
    pieces = test_pieces(args.data, dataset)
    if not pieces:
        sys.exit(f"{dataset}: no test pieces with MIDI in manifest.json")
    rows, timing = [], {m: [0.0, 0.0] for m in METHODS}
    estimate_notes(np.zeros(RATE, np.float32) + 1e-3 * np.sin(np.arange(RATE)), RATE)  # load the model first
    with tempfile.TemporaryDirectory(prefix="strata-bench-transcription-") as tmp:
        for i, (track, audio, midi) in enumerate(pieces):
            ref = read_midi(midi)
            for cond in CONDITIONS:
                x = condition_audio(cond, audio, midi, Path(tmp), seed=i)
                seconds = len(x) / RATE
                for method in METHODS:
                    t0 = time.perf_counter()
                    est = estimate_notes(x, RATE, method)
                    timing[method][0] += time.perf_counter() - t0
                    timing[method][1] += seconds
                    row = {"track": track, "condition": cond, "method": method, "seconds": round(seconds, 2),
                           "reference_notes": sum(not n.is_drum for n in ref), "estimated_notes": len(est),
                           "exact": note_f1(ref, est), "pitch_class": note_f1(ref, est, pitch_class=True)}
                    rows.append(row)
                    print(f"{track} {cond:16s} {method:12s} F1 {row['exact']['f1']:.3f} "
                          f"(pitch class {row['pitch_class']['f1']:.3f})", flush=True)
    kept = [r for r in rows if r["seconds"] >= args.min_seconds]
    summary = [{"condition": c, "method": m, "pieces": len(sel), **mean_scores(sel)}
               for c in CONDITIONS for m in METHODS
               if (sel := [r for r in kept if r["condition"] == c and r["method"] == m])]
    result = {
        "machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]),
        "onset_tolerance_s": 0.05, "min_seconds": args.min_seconds,
        "estimators": {m: estimator_version(m) for m in METHODS},
        "speed_x_real_time": {m: round(t[1] / t[0], 1) for m, t in timing.items() if t[0] > 0},
        "summary": summary, "results": rows,
    }
    for s in summary:
        print(f"{s['condition']:16s} {s['method']:12s} F1 {s['exact']['f1']:.3f} P {s['exact']['precision']:.3f} "
              f"R {s['exact']['recall']:.3f} | pitch class F1 {s['pitch_class']['f1']:.3f} ({s['pieces']} pieces)")
    print("speed (x real time):", result["speed_x_real_time"])
    if args.json:
        atomic_write_json(args.json, result)
        print(f"results: {args.json}")
    return result


if __name__ == "__main__":
    main()
