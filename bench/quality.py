"""Music, not noise: the quality targets of a trained run, measured -> ``OUT/quality.json`` + spectrograms.

    python bench/quality.py --data demo/data --run demo/run --out docs/results [--seconds 20]

Writes, with the commit, config and command that produced them:

- ``evaluation.json``: held-out bits per sample of the test split (``strata evaluate``);
- ``evaluation_other_soundfont.json``: the same test pieces rendered with another soundfont
  (``--other-font``; audio the run never saw), the train split unchanged;
- ``quality.json``: diagnostics of target pieces (one per test-split MIDI, one per genre, a
  re-synthesis, a continuation of a sustained chord, ten unprompted stage-0 lengths), the same
  measures on the real test audio, and each target with its number and whether it is met;
- ``<piece>.png``: the spectrograms of the target pieces.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def stamp(extra: dict) -> dict:
    from machine import machine_info

    return {"commit": commit(), "command": " ".join(["python"] + sys.argv), "machine": machine_info(), **extra}


# ----------------------------------------------------------------------------- data


def test_tracks(data: Path) -> list[dict]:
    from pipeline.dataset import load_manifest

    return [t for t in load_manifest(data)["tracks"] if t["split"] == "test"]


def other_font_dataset(data: Path, run: Path, font: str, work: Path) -> Path:
    """``data`` with its test tracks re-rendered from their MIDI with ``font`` (train/valid kept)."""
    from pipeline.config import load_config
    from pipeline.dataset import load_manifest
    from pipeline.midi import render_midi
    from pipeline.preprocess import preprocess_file

    manifest = load_manifest(data)
    data_cfg = load_config(run / "config.yaml").data
    out = work / "data_other_font"
    tracks = []
    for t in manifest["tracks"]:
        if t["split"] != "test":
            for rel in list(t["tiers"].values()) + ([t["roll"]] if t.get("roll") else []):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                if not (out / rel).exists():
                    os.symlink((data / rel).resolve(), out / rel)
            tracks.append(t)
            continue
        wav = work / "raw_other_font" / t["genre"] / (Path(t["midi"]).stem + ".wav")
        wav.parent.mkdir(parents=True, exist_ok=True)
        render_midi(t["midi"], wav, sr=max(data_cfg.rates), soundfont=font)
        rec = preprocess_file(wav, t["genre"], t["midi"], out, data_cfg)
        rec.pop("info", None)
        tracks.append({**rec, "split": "test", "genre_id": t["genre_id"]})
    (out / "manifest.json").write_text(json.dumps({**manifest, "tracks": tracks}, indent=1))
    return out


# ----------------------------------------------------------------------------- pieces


def piece(job: dict) -> dict:
    """Generate one target piece (a worker process) and return its diagnostics."""
    import torch

    torch.set_num_threads(1)
    from pipeline.generate import generate

    t0 = time.perf_counter()
    done = sorted(Path(job["out"]).glob("job-*/meta.json"))  # --reuse: a finished job of an earlier try
    folder = done[0].parent if done else generate(job["run"], job["out"], progress=False, **job["params"])[0]
    meta = json.loads((folder / "meta.json").read_text())
    shutil.copy(folder / "spectrogram.png", Path(job["results"]) / f"{job['name']}.png")
    return {"name": job["name"], "params": job["params"], "wall_seconds": time.perf_counter() - t0,
            "real_time_factor": meta["timings"]["real_time_factor"], "roll_source": meta.get("roll_source"),
            "prompt_seconds": meta.get("prompt_seconds", 0.0),
            "diagnostics": meta.get("diagnostics"), "job": str(folder)}


def piece_jobs(run: Path, data: Path, work: Path, results: Path, seconds: float) -> list[dict]:
    from pipeline.dataset import load_manifest

    tracks = test_tracks(data)
    jobs = [{"name": f"midi-{t['genre']}", "params": {"midi": t["midi"], "genre": t["genre"], "seconds": seconds}}
            for t in tracks if t.get("midi")]
    jobs += [{"name": f"genre-{g}", "params": {"genre": g, "seconds": seconds}} for g in load_manifest(data)["genres"]]
    jobs.append({"name": f"resynth-{tracks[0]['genre']}", "params": {"resynth": tracks[0]["source"],
                                                                     "seconds": min(seconds, 10.0)}})
    for j in jobs:
        j["params"]["seed"] = 1
        j.update(run=str(run), out=str(work / "jobs" / j["name"]), results=str(results))
    return jobs


def continuation(run: Path, data: Path, work: Path, results: Path) -> dict:
    """Target 7: a test track cut where a chord sounds on for >= 1 s; the 3 s before the cut are the
    prompt, 2 s are generated after it.
    Chroma of the continuation's first second against the prompt's last second, with the real
    continuation as the reference and other moments of the same track as chance."""
    from pipeline import assess_metrics as am
    from pipeline.audio import load_audio, to_mono
    from pipeline.midi import read_midi

    for t in test_tracks(data):
        cut = sustained_cut(read_midi(t["midi"])) if t.get("midi") else None
        if cut is not None:
            break
    else:
        return {"skipped": "no test track with a sustained chord"}
    audio, sr = load_audio(t["source"])
    audio = to_mono(audio)
    n = int(cut * sr)
    prompt = work / "prompt.wav"
    import soundfile as sf

    sf.write(str(prompt), audio[max(0, n - 3 * sr):n], sr)  # the 3 s before the cut
    res = piece({"name": "continuation", "params": {"prompt": str(prompt), "seconds": 2.0, "seed": 1,
                                                     "genre": t["genre"]},
                 "run": str(run), "out": str(work / "jobs" / "continuation"), "results": str(results)})
    gen, gen_sr = sf.read(str(Path(res["job"]) / "audio.wav"))
    p_len = int(round(res["prompt_seconds"] * gen_sr))
    last = am.chroma(am.to_analysis_rate(audio[n - sr:n], sr)).mean(axis=1, keepdims=True)  # (12, 1)
    def score(seg, rate):  # mean cosine of the segment's chroma frames with the prompt's last second
        c = am.chroma(am.to_analysis_rate(seg, rate))
        return am.mean_cosine(c, np.repeat(last, c.shape[1], axis=1))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, max(1, len(audio) - sr), 8)
    out = {"track": t["id"], "cut_seconds": cut, "generated": score(gen[p_len:p_len + gen_sr], gen_sr),
           "real": score(audio[n:n + sr], sr), "chance": float(np.mean([score(audio[s:s + sr], sr) for s in starts])),
           "roll_source": res["roll_source"]}
    out["share_of_real_lift"] = (out["generated"] - out["chance"]) / max(out["real"] - out["chance"], 1e-9)
    return out


def sustained_cut(notes, hold: float = 1.0, lead: float = 0.5, earliest: float = 2.0) -> float | None:
    """A time t >= earliest where the same notes sound over [t - lead, t + hold]."""
    end = max(n.end for n in notes)
    for t in np.arange(earliest, end - hold, 0.05):
        on = {n.pitch for n in notes if n.start <= t - lead and n.end >= t + hold}
        if len(on) >= 2 and all(not (t - lead < n.start < t + hold) for n in notes):
            return float(t)
    return None


def end_lengths(run: Path, data: Path, count: int = 10) -> dict:
    """Target 6: ``count`` seeded genre-only pieces, stage 0 only, no --seconds: where they end."""
    import torch

    from pipeline.dataset import load_manifest
    from pipeline.generate import run_stage
    from pipeline.plan import make_plan, validate_params
    from pipeline.run import load_run

    loaded = load_run(run)
    genres = load_manifest(data)["genres"]
    r0, fps = loaded.rates[0], loaded.cfg.data.roll_fps
    lengths, sources, decided = [], [], []
    for seed in range(count):  # the plans of `strata generate --genre G --seed S` (no --seconds)
        p = validate_params(run_dir=str(run), out_dir=str(run / "unused"), genre=genres[seed % len(genres)],
                            seed=seed).with_run_defaults(loaded.cfg.generate)
        plan = make_plan(loaded, p)
        sources.append(plan.roll_source)
        if not plan.free_length:  # the score decides: it ends with its score (+ release)
            lengths.append(plan.n0 / r0)
            decided.append("score")
            continue
        roll = None
        if plan.roll is not None:
            roll = torch.from_numpy(plan.roll.reshape(256, -1).astype(np.float32) / 127)[None]
        res = run_stage(loaded.stages[0], plan.n0, 1, genre=torch.tensor([plan.genre_id]), roll=roll,
                        free_length=True, min_length=r0 // fps, round_to=r0 // fps, temperature=p.temperature,
                        top_p=p.top_p, end_threshold=p.end_threshold, generator=torch.Generator().manual_seed(seed))
        lengths.append(res.lengths[0] / r0)
        decided.append("end class")
    train = [t["seconds"] for t in load_manifest(data)["tracks"] if t["split"] == "train"]
    median = float(np.median(train))
    cap = loaded.cfg.generate.max_seconds
    inside = sum(0.5 * median <= s <= 2 * median and s < cap for s in lengths)
    return {"seconds": lengths, "roll_source": sources, "decided_by": decided, "cap_seconds": cap,
            "median_train_seconds": median, "ended_before_cap": sum(s < cap for s in lengths),
            "ended_within_half_to_twice_median": inside}


def real_reference(data: Path) -> list[dict]:
    from pipeline.assess import assess_audio

    return [assess_audio(Path(t["source"]), Path(t["midi"]) if t.get("midi") else None) for t in test_tracks(data)]


# ----------------------------------------------------------------------------- targets


def targets(ev: dict, other: dict | None, pieces: list[dict], real: list[dict], cont: dict, ends: dict) -> list[dict]:
    def st(e, k):
        return e["stages"][k] if e and k < len(e["stages"]) else {}

    rows = []
    midi = [p["diagnostics"]["score"] for p in pieces if p["name"].startswith("midi-") and p.get("diagnostics")]
    share = [(s["chroma_agreement"] - s["chroma_chance"]) / max(s["chroma_reference"] - s["chroma_chance"], 1e-9)
             for s in midi if s and s.get("chroma_reference") is not None]
    rows.append({"target": "1 MIDI pieces follow the score: chroma lift >= 0.5 of the reference's",
                 "value": float(np.mean(share)) if share else None, "per_piece": share,
                 "met": bool(share) and float(np.mean(share)) >= 0.5})
    noise = [p["diagnostics"]["noise"] for p in pieces if p.get("diagnostics") and not p["name"].startswith("resynth")]
    quiet = 1.0 - float(np.mean([n["noisy_share"] for n in noise])) if noise else None
    flat = float(np.median([n["flatness_median"] for n in noise])) if noise else None
    real_flat = float(np.median([r["noise"]["flatness_median"] for r in real])) if real else None
    rows.append({"target": "2 no noise collapse: >= 95% of windows below the threshold; median flatness <= 5x real",
                 "value": {"share_below": quiet, "median_flatness": flat, "real_median_flatness": real_flat},
                 "met": quiet is not None and quiet >= 0.95 and flat <= 5 * real_flat})
    rs = [p["diagnostics"]["resynth"] for p in pieces if p["name"].startswith("resynth") and p.get("diagnostics")]
    rows.append({"target": "3 re-synthesis beats band-limited upsampling (LSD dB)",
                 "value": rs[0] if rs else None, "met": bool(rs) and rs[0]["lsd_db"] < rs[0]["lsd_upsampled_db"]})
    for name, e in (("demo test split", ev), ("other soundfont", other)):
        if not e:
            continue
        fine = [st(e, k) for k in (1, 2) if st(e, k)]
        gain = [s["linear_baseline_bits_per_sample"] - s["bits_per_sample"] for s in fine]
        cost = [s["bits_per_sample_without_conditioning"] - s["bits_per_sample"] for s in fine]
        rows.append({"target": f"4 stages 1, 2 ({name}): >= 0.2 bits below the linear baseline; "
                               "tier below worth >= 0.5",
                     "value": {"below_baseline": gain, "conditioning_worth": cost},
                     "met": all(g >= 0.2 for g in gain) and all(c >= 0.5 for c in cost)})
        s0 = st(e, 0)
        roll = s0.get("bits_per_sample_without_roll", float("nan")) - s0.get("bits_per_sample", float("nan"))
        hist = s0.get("bits_per_sample_short_context", float("nan")) - s0.get("bits_per_sample", float("nan"))
        genre = s0.get("bits_per_sample_without_genre", float("nan")) - s0.get("bits_per_sample", float("nan"))
        rows.append({"target": f"5 stage 0 ({name}): roll worth >= 0.5 bits, history >= 0.1",
                     "value": {"roll": roll, "genre": genre, "history": hist}, "met": roll >= 0.5 and hist >= 0.1})
    rows.append({"target": "6 unprompted pieces end by themselves in >= 8/10, within 0.5-2x the median track "
                           "(by the end class, or with their chain score)",
                 "value": ends, "met": ends["ended_within_half_to_twice_median"] >= 8})
    rows.append({"target": "7 continuation keeps the prompt's harmony: >= 0.5 of the real continuation's lift",
                 "value": cont, "met": bool(cont.get("share_of_real_lift", 0) >= 0.5)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per target piece")
    ap.add_argument("--other-font", default="/usr/share/sounds/sf2/TimGM6mb.sf2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", type=Path, help="work folder of an interrupted try: finished jobs and the "
                    "evaluation JSONs already in --out are kept")
    a = ap.parse_args(argv)
    from pipeline.evaluate import evaluate_run

    a.out.mkdir(parents=True, exist_ok=True)
    work = a.reuse or Path(tempfile.mkdtemp(prefix="strata-quality-"))
    print(f"work folder: {work}", flush=True)
    config = json.loads(json.dumps(__import__("yaml").safe_load((a.run / "config.yaml").read_text())))
    t0 = time.perf_counter()
    kept = a.reuse is not None and (a.out / "evaluation.json").is_file()
    if kept:
        ev = json.loads((a.out / "evaluation.json").read_text())["evaluation"]
    else:
        ev = evaluate_run(a.data, a.run, split="test", progress=False)
        (a.out / "evaluation.json").write_text(json.dumps(stamp({"config": config, "evaluation": ev}), indent=1))
    other, warnings = None, []
    if kept and (a.out / "evaluation_other_soundfont.json").is_file():
        other = json.loads((a.out / "evaluation_other_soundfont.json").read_text())["evaluation"]
    elif a.other_font and Path(a.other_font).is_file():
        other = evaluate_run(other_font_dataset(a.data, a.run, a.other_font, work), a.run, split="test", progress=False)
        (a.out / "evaluation_other_soundfont.json").write_text(
            json.dumps(stamp({"config": config, "soundfont": a.other_font, "evaluation": other}), indent=1))
    else:  # one line, and quality.json says so: the "other soundfont" rows are missing, not passed
        warnings.append(f"warning: --other-font {a.other_font!r} is not a file: the other-soundfont rows are left out")
        print(warnings[-1], file=sys.stderr, flush=True)
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        pieces = list(pool.map(piece, piece_jobs(a.run, a.data, work, a.out, a.seconds)))
    cont = continuation(a.run, a.data, work, a.out)
    ends = end_lengths(a.run, a.data)
    real = real_reference(a.data)
    result = stamp({"config": config, "seconds_per_piece": a.seconds, "wall_seconds": time.perf_counter() - t0,
                    "targets": targets(ev, other, pieces, real, cont, ends), "pieces": pieces,
                    "continuation": cont, "end_lengths": ends, "real_test_audio": real, "warnings": warnings})
    (a.out / "quality.json").write_text(json.dumps(result, indent=1, default=float))
    for row in result["targets"]:
        print(("MET  " if row["met"] else "MISS ") + row["target"], flush=True)
    print(f"{a.out / 'quality.json'} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
