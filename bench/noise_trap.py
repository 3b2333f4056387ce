"""The fine stages' noise trap, run by run: how much the linear path amplifies its own sampled past, what
that costs in held-out bits, and how much of the generated audio falls into broadband noise.

For each ``--run`` (runs that differ in a fine stage, e.g. ``stages[1].linear_input_noise``):

- per fine stage, the own-past taps' noise gain sqrt(1 + sum a_i^2) and the largest root of their
  recursion (read from the exported weights);
- held-out bits per sample of every stage on the test split's first ``--max-seconds`` s of each track,
  beside the linear baseline (``pipeline.evaluation.evaluate.evaluate_run``);
- 8 s pieces (seed 1, the run's sampling settings): MIDI-prompted on up to four test tracks with a MIDI
  file, and genre-prompted for each genre (``--per-genre`` seeds): the share of 1 s windows flatter than
  the run's calibrated noise threshold, the tier SNR at each tier (the stage's low band against the tier
  below it), band levels relative to 0-1 kHz, and for MIDI-prompted pieces the note F1 that basic-pitch
  finds against the MIDI file.

    python bench/noise_trap.py --data demo_final/data --run demo_final/run --run demo_final/run_in03 \
        --json docs/results/noise_trap.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)

SECONDS = 8.0


def tap_gains(run: Path) -> dict:
    """Per stage with a linear path: the own-past noise gain and the largest root of the recursion."""
    from models.checkpoint import load_stage
    from models.predictor import noise_gain

    out = {}
    for folder in sorted((run / "stages").iterdir()):
        if not folder.name.isdigit():
            continue
        st = load_stage(folder)
        if getattr(st, "linear", None) is None:
            continue
        a = st.linear.past_weight.detach().double().numpy()
        roots = np.roots(np.concatenate([[1.0], -a]))
        score = st.arch.score
        out[folder.name] = {"noise_gain": round(noise_gain(a), 3),
                            "largest_root": round(float(np.abs(roots).max()), 4),
                            # score taps: their order where the stage has them (0: the linear order), else None
                            "score_taps": score.order if score.enabled else None,
                            "training": json.loads((folder / "model.json").read_text()).get("extra", {})
                            .get("training")}
    return out


def held_out_bits(data: Path, run: Path, max_seconds: float) -> dict:
    from pipeline.evaluation.evaluate import evaluate_run

    res = evaluate_run(data, run, "test", max_seconds, progress=False)
    return {str(s["index"]): {"bits_per_sample": round(s["bits_per_sample"], 4),
                              "linear_baseline": round(s["linear_baseline_bits_per_sample"], 4),
                              "below_linear": round(s["linear_baseline_bits_per_sample"] - s["bits_per_sample"], 4)}
            for s in res["stages"]}


def pieces(data: Path, run: Path, work: Path, per_genre: int) -> list[dict]:
    """Generate (or reuse) the pieces and read their diagnostics."""
    import soundfile as sf

    from pipeline.corpus.dataset import load_manifest
    from pipeline.corpus.midi import read_midi
    from pipeline.corpus.transcribe import estimate_notes, note_f1
    from pipeline.generation.generate import generate

    manifest = load_manifest(data)
    tests = [t for t in manifest["tracks"] if t["split"] == "test" and t.get("midi")][:4]
    jobs = [(f"midi-{t['genre']}-{t['id'][-8:]}", {"midi": t["midi"], "genre": t["genre"]}, 1) for t in tests]
    jobs += [(f"genre-{g}-{s}", {"genre": g}, s) for g in manifest["genres"] for s in range(1, per_genre + 1)]
    rows = []
    for name, kw, seed in jobs:
        out = work / name
        if not list(out.glob("*/meta.json")):
            generate(run, out, progress=False, seconds=SECONDS, seed=seed, **kw)
        folder = next(out.glob("*/meta.json")).parent
        d = json.loads((folder / "meta.json").read_text())["diagnostics"]
        row = {"name": name, "noisy_share": d["noise"]["noisy_share"],
               "tier_snr_db": {r: round(v, 1) for r, v in d["tiers"]["snr_db"].items()},
               "bands_db": {b: round(v, 1) for b, v in d["bands"].items()}}
        if "midi" in kw:
            y, sr = sf.read(folder / "audio.wav")
            ref = [n for n in read_midi(kw["midi"]) if n.start < SECONDS]
            row["note_f1"] = round(note_f1(ref, estimate_notes(y, sr))["f1"], 3)
        rows.append(row)
        print(run.name, row, flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    def of(kind):
        sel = [r for r in rows if r["name"].startswith(kind)]
        if not sel:
            return None
        snrs = [v for r in sel for v in r["tier_snr_db"].values()]
        f1 = [r["note_f1"] for r in sel if "note_f1" in r]
        return {"pieces": len(sel), "noisy_share_mean": round(float(np.mean([r["noisy_share"] for r in sel])), 3),
                "pieces_with_noise": sum(r["noisy_share"] > 0 for r in sel),
                "tier_snr_db_min": min(snrs), "tier_snr_db_median": round(float(np.median(snrs)), 1),
                "pieces_all_tiers_snr_20db": sum(min(r["tier_snr_db"].values()) >= 20 for r in sel),
                "bands_db_median": {b: round(float(np.median([r["bands_db"][b] for r in sel])), 1)
                                    for b in sel[0]["bands_db"]},
                "note_f1_mean": round(float(np.mean(f1)), 3) if f1 else None}
    return {"midi": of("midi"), "genre": of("genre")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", action="append", required=True, help="a run folder (repeat to compare)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--work", default=None,
                    help="the pieces go to WORK/<run name>/ (default: <run>/noise_trap_pieces/)")
    ap.add_argument("--per-genre", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=15.0, help="of each test track, for the held-out bits")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    data = Path(a.data)
    from pipeline.run import read_config

    for r in a.run:  # every run's config before any work: one bad folder must not cost the others' hours
        read_config(Path(r))
    runs = {}
    for r in a.run:
        run = Path(r)
        rows = pieces(data, run, Path(a.work) / run.name if a.work else run / "noise_trap_pieces", a.per_genre)
        runs[run.name] = {"run": r, "taps": tap_gains(run), "held_out": held_out_bits(data, run, a.max_seconds),
                          "pieces": rows, "summary": summary(rows)}
        print(run.name, runs[run.name]["taps"], runs[run.name]["held_out"], runs[run.name]["summary"], flush=True)
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "seconds": SECONDS,
           "max_seconds": a.max_seconds, "runs": runs, "wall_seconds": round(time.time() - t0, 1)}
    from pipeline.io import atomic_write_json

    atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
