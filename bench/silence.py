"""Silence trap on scores unlike the training MIDI (issue 19, item 8): does stage 0 sound where the
score has notes, and how flat (noise-like) is the final audio?

For each piece (a MIDI file, optionally rewritten: ``quiet`` velocities scaled into 20..40, ``dense``
every note doubled a third, a fifth and an octave up) and each seed, the cascade renders the first
``--seconds`` of the score with the run's generation defaults, and the script reports per piece:

- stage 0's level (dBFS of each 1 s window of the 2 kHz tier), its median over the windows with notes;
- ``silent_notes``: share of 1 s windows where the score has a sounding note but stage 0 is below -50 dBFS;
- the final audio's median spectral flatness over its 1 s windows (``window_flatness``, as the quality
  bench) and the share of windows above the run's flatness calibration (99th percentile of training).

    python bench/silence.py --run demo_final/run --out bench/results/silence.json \\
        --piece test:demo_final/raw/chorale/bach-bwv108.6.mid ...

``--piece LABEL:PATH[:quiet|dense]``; ``--stage0-only`` skips stages 1-2 (fast, level numbers only);
``--genre NAME`` conditions every MIDI piece on that genre as well (as a genre-prompted job's score is; the
trap can be the genre's: a folk score of the other soundfont's run played in every one of 10 draws without the
genre and in none with it, ``docs/results/silence_folk_high_*.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import run_info  # noqa: E402 - after the repository root is on sys.path

SILENT_DB = -50.0  # a window with notes whose stage-0 level is below this is "silent through notes"
QUIET_RANGE = (20, 40)
DENSE_INTERVALS = (4, 7, 12)
LATE_SECONDS = 2.0


def rewrite_midi(src: Path, mode: str, dst: Path) -> Path:
    """A copy of ``src`` with velocities scaled into ``QUIET_RANGE`` (quiet) or each note doubled at
    ``DENSE_INTERVALS`` semitones up (dense), or ``late``: LATE_SECONDS of rest before the first note."""
    mid = mido.MidiFile(str(src))
    if mode == "late":
        ticks = int(mido.second2tick(LATE_SECONDS, mid.ticks_per_beat, 500000))
        for track in mid.tracks:
            for i, msg in enumerate(track):
                if msg.type == "note_on":
                    track[i] = msg.copy(time=msg.time + ticks)
                    break
        mid.save(str(dst))
        return dst
    for track in mid.tracks:
        out = []
        for msg in track:
            is_note = msg.type in ("note_on", "note_off")
            if mode == "quiet" and msg.type == "note_on" and msg.velocity > 0:
                lo, hi = QUIET_RANGE
                msg = msg.copy(velocity=int(round(lo + (msg.velocity - 1) * (hi - lo) / 126)))
            out.append(msg)
            if mode in ("high", "low") and is_note and getattr(msg, "channel", 0) != 9:
                msg = out[-1] = msg.copy(note=min(127, max(0, msg.note + (24 if mode == "high" else -24))))
            if mode == "dense" and is_note and getattr(msg, "channel", 0) != 9:
                for d in DENSE_INTERVALS:
                    if msg.note + d < 128:
                        out.append(msg.copy(note=msg.note + d, time=0))
        track[:] = out
    mid.save(str(dst))
    return dst


def dbfs(x: np.ndarray, rate: int) -> np.ndarray:
    """(windows,) dBFS (RMS) of each whole 1 s window of x."""
    n = len(x) // rate
    w = x[: n * rate].astype(np.float64).reshape(n, rate)
    return 20 * np.log10(np.sqrt((w**2).mean(1)) + 1e-12)


def note_windows(roll: np.ndarray, fps: int, n: int) -> np.ndarray:
    """(n,) bool: the score has a sounding note in 1 s window i."""
    on = roll[0].max(0) > 0  # (F,)
    return np.array([bool(on[i * fps:(i + 1) * fps].any()) for i in range(n)])


def silent_share(levels: np.ndarray, sounding: np.ndarray) -> float | None:
    """Share of the windows with a sounding note (``sounding`` (n,) bool) whose level (``levels`` (n,) dBFS) is
    below ``SILENT_DB``; None: no window sounds."""
    return round(float((levels[sounding] < SILENT_DB).mean()), 3) if sounding.any() else None


def measure(run, plan, res, threshold: float) -> dict:
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.corpus.audio import mulaw_decode
    from pipeline.evaluation.assess_metrics import window_flatness

    rates = run.rates
    bits = run.cfg.data.mu_bits
    a0 = mulaw_decode(res.tiers[rates[0]][0].numpy(), bits)
    lv = dbfs(a0, rates[0])
    notes = note_windows(plan.roll, run.cfg.data.roll_fps, len(lv))
    out = {"stage0_dbfs": [round(float(v), 1) for v in lv],
           "stage0_median_dbfs_notes": round(float(np.median(lv[notes])), 1) if notes.any() else None,
           "note_windows": int(notes.sum()),
           "silent_notes": silent_share(lv, notes)}
    if rates[-1] in res.tiers and len(rates) > 1 and res.tiers[rates[-1]].shape[1] > 0:
        fine = mulaw_decode(res.tiers[rates[-1]][0].numpy(), bits)
        flat = window_flatness(fine if rates[-1] == 16000 else __import__("librosa").resample(
            fine, orig_sr=rates[-1], target_sr=16000))
        ok = flat[np.isfinite(flat)]
        out.update({"final_dbfs_median": round(float(np.median(dbfs(fine, rates[-1]))), 1),
                    "flatness_median": float(np.median(ok)) if ok.size else None,
                    "flatness_above_threshold": round(float((ok > threshold).mean()), 3) if ok.size else None})
    return out


def render(run, midi: Path | None, seconds: float, seed: int, stage0_only: bool, out_dir: Path,
           genre: str | None = None, score_model: str | None = None):
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    import torch

    from pipeline.generation.generate import run_cascade, run_stage, stage_inputs
    from pipeline.generation.jobs import CascadeResult
    from pipeline.generation.plan import make_plan, validate_params

    p = validate_params(run_dir=run.path, out_dir=out_dir, midi=midi, genre=genre, score_model=score_model,
                        seconds=seconds, seed=seed).with_run_defaults(run.cfg.generate)
    plan = make_plan(run, p)
    if not stage0_only:
        return plan, run_cascade(run, plan, p, progress=False)
    gen = torch.Generator().manual_seed(p.seed)
    r = run_stage(run.stages[0], plan.n0, 1, **stage_inputs(run, plan, p, 0, plan.n0), generator=gen,
                  engine=p.engine)
    return plan, CascadeResult({run.rates[0]: r.x}, r.lengths, [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="JSON file")
    ap.add_argument("--piece", action="append", required=True, help="LABEL:PATH[:quiet|dense]")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--stage0-only", action="store_true")
    ap.add_argument("--genre", default=None, help="condition the MIDI pieces on this genre too (default: none)")
    ap.add_argument("--scale-floor", type=float, default=None,
                    help="set stage 0's score.scale_floor (the adaptive scale's floor where notes sound) on the "
                         "loaded run, e.g. to measure a run trained without it; default: the run's own")
    args = ap.parse_args(argv)

    # local: keeps torch out of the script's start-up (--help, bad arguments)
    import torch

    from pipeline.run import load_run

    torch.set_num_threads(1)
    run = load_run(args.run)
    if args.scale_floor is not None:
        run.stages[0].linear.note_floor = float(args.scale_floor)
    cal = json.loads((args.run / "diagnostics_calibration.json").read_text())
    threshold = float(cal["flatness_threshold"])
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.piece:
            label, path, *mode = spec.split(":")
            midi, genre = Path(path), args.genre
            if path.startswith("genre="):  # a written score: genre=NAME:chain|tier
                midi, genre = None, path.removeprefix("genre=")
            elif mode:
                midi = rewrite_midi(midi, mode[0], Path(tmp) / f"{label}-{mode[0]}.mid")
            for seed in seeds:
                t0 = time.perf_counter()
                plan, res = render(run, midi, args.seconds, seed, args.stage0_only, Path(tmp) / "out", genre,
                                   mode[0] if midi is None else None)
                row = {"piece": label, "midi": path, "mode": mode[0] if mode else "as-is", "seed": seed,
                       **measure(run, plan, res, threshold), "wall_s": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for key in ("stage0_median_dbfs_notes", "silent_notes", "flatness_median", "flatness_above_threshold"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        summary[key] = float(np.median(vals)) if vals else None
    summary["silent_notes_mean"] = float(np.mean([r["silent_notes"] for r in rows if r["silent_notes"] is not None]))
    doc = {**run_info(), "run": str(args.run), "seconds": args.seconds, "seeds": seeds, "genre": args.genre,
           "scale_floor": float(run.stages[0].linear.note_floor),
           "silent_db": SILENT_DB, "flatness_threshold": threshold, "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
