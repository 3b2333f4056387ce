"""Diagnostics of generated or real audio (``strata assess``; ``meta.json["diagnostics"]`` of a job).

One assessment is a dict of groups (measures in ``pipeline.evaluation.assess_metrics``)::

    {"path", "kind": "job" | "audio", "seconds",
     "score":  {"midi", "offset_seconds", "frames", "chroma_agreement", "chroma_chance",
                "chroma_reference", "chroma_lift", ["warnings"]} | null,
     "transcription": {"method", "notes", "precision", "recall", "f1", "pitch_class_precision",
                       "pitch_class_recall", "pitch_class_f1", "reference_f1", "reference_pitch_class_f1",
                       "reference_precision", "reference_recall"} | null   (strata assess only),
     "bands":  {"1-2k", "2-4k", "4-8k"} (dB relative to 0-1 kHz, median over 1 s windows),
     "bands_reference": the same for a plain rendering of the MIDI over the audio's span | null
                        (with a MIDI only),
     "noise":  {"flatness_median", "flatness_threshold", "threshold_source", "noisy_share",
                "first_noisy_seconds", "windows", "silent_windows"},
     "tiers":  {"source": "generated" | "preprocessed", "snr_db": {"<rate>": dB}},
     "length": {"seconds", "length_decided_by_model", "ended_by_end_class"},
     "resynth": {"source", "lsd_db", "lsd_upsampled_db", "lsd_high_db", "lsd_upsampled_high_db",
                 "high_band_hz"}}

``chroma_lift = chroma_agreement - chroma_chance``; ``chroma_reference`` is the agreement of a
plain FluidSynth rendering of the MIDI (null without FluidSynth: then ``warnings`` says why, and one
warning line is logged).  ``transcription``: note F1
(mir_eval, onsets within 50 ms; exact pitch and pitch class) of the audio's notes as basic-pitch
hears them (pipeline/corpus/transcribe.py) against the MIDI's notes over the audio's span, and the same for
a plain FluidSynth rendering of that span (``reference_*``, null without FluidSynth).  It runs in
``strata assess`` only, not in a generation job's diagnostics: there it would add the model's load
(about 3 s per process) and two transcriptions (the piece and its rendering, ~19x real time each) to
a MIDI job that takes about 1.9 s with the fused engine (bench/results/demo_generation.json).
For a plain audio file the tiers are made as in preprocessing (``make_tiers`` at ``DEFAULT_RATES``):
their SNR is the floor that mu-law quantisation leaves real data, and ``resynth`` holds the plain-upsampling LSD only.
The noise threshold is calibrated on training audio (``calibrate_noise``), stored in the run
folder as ``diagnostics_calibration.json``; without it ``FALLBACK_FLATNESS_THRESHOLD`` is used.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.corpus.audio import AUDIO_EXTENSIONS, load_audio, make_tiers, mulaw_decode, resample, to_mono
from pipeline.corpus.dataset import load_manifest
from pipeline.corpus.midi import MidiError, read_midi, render_midi
from pipeline.corpus.transcribe import DEFAULT_METHOD, estimate_notes, note_f1
from pipeline.errors import InputError, ParameterError, StrataError
from pipeline.evaluation import assess_metrics as am
from pipeline.io import atomic_write_json, load_npy
from pipeline.run import calibration_path

log = logging.getLogger("strata.assess")
CALIBRATION_PERCENTILE = 99.0
# p99 of 1 s window flatness of the demo corpus's train split (16 kHz tier, decoded from mu-law:
# 0.0094 measured on the 24 train tracks, 1020 windows, rounded up); used when a run has no calibration
FALLBACK_FLATNESS_THRESHOLD = 0.01
DEFAULT_RATES = (2000, 8000, 16000)


# ----------------------------------------------------------------------------- calibration


def calibrate_noise(data_dir: str | Path, split: str = "train", percentile: float = CALIBRATION_PERCENTILE) -> dict:
    """Flatness threshold = ``percentile`` of the non-silent 1 s window flatness over ``split``'s
    fine tier (decoded from mu-law, at ``ANALYSIS_RATE``)."""
    manifest = load_manifest(data_dir)
    fine, bits = max(manifest["rates"]), int(math.log2(manifest["classes"]))
    tracks = [t for t in manifest["tracks"] if t["split"] == split]
    if not tracks:
        raise ParameterError(f"{data_dir}: no {split} tracks to calibrate the noise threshold on")
    flat = [am.window_flatness(am.to_analysis_rate(mulaw_decode(load_npy(Path(data_dir) / t["tiers"][str(fine)]),
                                                                bits), fine)) for t in tracks]
    values = np.concatenate(flat)
    values = values[~np.isnan(values)]
    return {"flatness_threshold": float(np.percentile(values, percentile)), "percentile": percentile,
            "flatness_median": float(np.median(values)), "split": split, "tracks": len(tracks),
            "windows": int(values.size), "rate": am.ANALYSIS_RATE, "data": str(Path(data_dir).resolve())}


def write_calibration(data_dir: str | Path, run_dir: str | Path) -> dict:
    """``calibrate_noise(data_dir)`` written to ``run_dir/diagnostics_calibration.json``."""
    calibration = calibrate_noise(data_dir)
    atomic_write_json(calibration_path(run_dir), calibration)
    return calibration


def noise_threshold(run_dir: str | Path | None) -> tuple[float, str]:
    """(threshold, source): the run's calibration when it has one, else the fallback constant
    (source ``"fallback"``; ``"fallback: <reason>"`` and one warning when the calibration is unreadable)."""
    path = calibration_path(run_dir) if run_dir else None
    if path is not None and path.is_file():
        try:
            return float(json.loads(path.read_text())["flatness_threshold"]), str(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            reason = (f"{path}: unreadable calibration ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                      f"; the fallback flatness threshold {FALLBACK_FLATNESS_THRESHOLD} is used")
            log.warning(reason)
            return FALLBACK_FLATNESS_THRESHOLD, f"fallback: {reason}"
    return FALLBACK_FLATNESS_THRESHOLD, "fallback"


# ----------------------------------------------------------------------------- groups


def score_group(audio: np.ndarray, midi: Path, offset_seconds: float = 0.0) -> dict | None:
    """Chroma agreement of ``audio`` (at ``ANALYSIS_RATE``) with the MIDI, its chance level,
    lift and the FluidSynth reference; None if no note sounds within the audio."""
    found = am.chroma_agreement(audio, read_midi(midi), offset_seconds)
    if found is None:
        return None
    reference, why_not = reference_agreement(str(Path(midi).resolve()), Path(midi).stat().st_mtime_ns)
    return {"midi": str(midi), "offset_seconds": offset_seconds, **found, "chroma_reference": reference,
            "chroma_lift": found["chroma_agreement"] - found["chroma_chance"],
            **({"warnings": [why_not]} if why_not else {})}


@functools.lru_cache(maxsize=4)
def reference_rendering(midi: str, mtime_ns: int) -> tuple[np.ndarray | None, str | None]:
    """(a plain FluidSynth rendering of the MIDI at ``ANALYSIS_RATE``, None), or (None, why not) with one
    warning line (no FluidSynth or no soundfont, an unusable MIDI)."""
    with tempfile.TemporaryDirectory(prefix="strata-assess-") as tmp:
        try:
            wav = render_midi(midi, Path(tmp) / "reference.wav", sr=am.ANALYSIS_RATE)
        except MidiError as e:
            why = f"{midi}: no reference rendering, chroma_reference is null ({str(e).splitlines()[0]})"
            log.warning(why)
            return None, why
        x, sr = load_audio(wav)
    return am.to_analysis_rate(to_mono(x), sr), None


@functools.lru_cache(maxsize=32)
def reference_agreement(midi: str, mtime_ns: int) -> tuple[float | None, str | None]:
    """(chroma agreement of a plain FluidSynth rendering of the MIDI, None), or (None, why not) with one
    warning line."""
    rendering, why = reference_rendering(midi, mtime_ns)
    if rendering is None:
        return None, why
    found = am.chroma_agreement(rendering, read_midi(midi))
    if found is None:
        why = f"{midi}: the reference rendering has no frame where a note sounds; chroma_reference is null"
        log.warning(why)
        return None, why
    return found["chroma_agreement"], None


def reference_bands(midi: Path, seconds: float) -> dict | None:
    """Band levels (``am.band_levels``) of a plain rendering of the MIDI's first ``seconds`` (None
    without FluidSynth or when the span is empty)."""
    rendering, _ = reference_rendering(str(Path(midi).resolve()), Path(midi).stat().st_mtime_ns)
    n = int(round(seconds * am.ANALYSIS_RATE))
    return None if rendering is None or n <= 0 else am.band_levels(rendering[:n], am.ANALYSIS_RATE)


def transcription_group(audio: np.ndarray, midi: Path, offset_seconds: float = 0.0) -> dict | None:
    """Note F1 of ``audio`` (at ``ANALYSIS_RATE``; MIDI time 0 at ``offset_seconds``) against the
    MIDI's notes that start within it, beside a plain rendering of the same span; None when no
    note of the MIDI starts within the audio."""
    import dataclasses


    span = len(audio) / am.ANALYSIS_RATE - offset_seconds
    ref = [n for n in read_midi(midi) if not n.is_drum and n.start < span]
    if not ref:
        return None
    tol = 0.05
    est = [dataclasses.replace(n, start=n.start - offset_seconds, end=n.end - offset_seconds)
           for n in estimate_notes(audio, am.ANALYSIS_RATE) if n.start >= offset_seconds - tol]
    out = {"method": DEFAULT_METHOD, "notes": len(ref), "seconds": span, **note_f1(ref, est, tol),
           **{f"pitch_class_{k}": v for k, v in note_f1(ref, est, tol, pitch_class=True).items()}}
    rendering, _ = reference_rendering(str(Path(midi).resolve()), Path(midi).stat().st_mtime_ns)
    keys = ("reference_precision", "reference_recall", "reference_f1", "reference_pitch_class_f1")
    out.update(dict.fromkeys(keys))
    if rendering is not None:
        plain = estimate_notes(rendering[: int(round(span * am.ANALYSIS_RATE))], am.ANALYSIS_RATE)
        out.update({f"reference_{k}": v for k, v in note_f1(ref, plain, tol).items()})
        out["reference_pitch_class_f1"] = note_f1(ref, plain, tol, pitch_class=True)["f1"]
    return out


def resynth_group(output: np.ndarray, real: np.ndarray, coarse: np.ndarray, coarse_rate: int, rate: int) -> dict:
    """LSD (dB) of the output and of plain upsampling of the coarse tier to the real audio, over
    all bins and over the band above the coarse tier's Nyquist frequency (what the fine stages add)."""
    upsampled = resample(coarse, coarse_rate, rate)
    high = coarse_rate / 2
    return {"lsd_db": am.lsd_db(real, output, rate), "lsd_upsampled_db": am.lsd_db(real, upsampled, rate),
            "lsd_high_db": am.lsd_db(real, output, rate, high),
            "lsd_upsampled_high_db": am.lsd_db(real, upsampled, rate, high), "high_band_hz": high}


def diagnose(audio: np.ndarray, rate: int, *, tiers: dict[int, np.ndarray] | None = None,
             midi: Path | None = None, midi_offset: float = 0.0, run_dir: Path | None = None,
             threshold: tuple[float, str] | None = None, transcribe: bool = False) -> dict:
    """Score, noise, band and tier groups of mono float ``audio`` at ``rate``; ``tiers``: {rate: float
    audio} of the coarser tiers; ``threshold``: (value, source), else from ``run_dir``;
    ``transcribe``: also note F1 against the MIDI (``transcription_group``)."""
    value, source = threshold or noise_threshold(run_dir)
    a16 = am.to_analysis_rate(audio, rate)
    out: dict[str, Any] = {"seconds": len(audio) / rate, "rate": rate,
                           "score": score_group(a16, midi, midi_offset) if midi is not None else None,
                           "noise": {**am.noise_summary(a16, value), "threshold_source": source},
                           "bands": am.band_levels(a16, am.ANALYSIS_RATE)}
    if midi is not None:
        out["bands_reference"] = reference_bands(midi, len(a16) / am.ANALYSIS_RATE - midi_offset)
    if transcribe:
        out["transcription"] = transcription_group(a16, midi, midi_offset) if midi is not None else None
    if tiers:
        out["tiers"] = {"source": "generated", "snr_db": am.tier_consistency(audio, rate, tiers)}
    return out


def generation_diagnostics(tiers: dict[int, np.ndarray], *, midi: Path | None, midi_offset: float,
                           run_dir: Path, length: dict, resynth: dict[int, np.ndarray] | None = None,
                           resynth_source: str | None = None) -> dict:
    """Diagnostics of one generated piece for its meta.json: ``tiers`` {rate: float audio} (the
    finest is the output); ``resynth`` {rate: float audio} of the real audio in resynth mode."""
    rates = sorted(tiers)
    fine = rates[-1]
    out = diagnose(tiers[fine], fine, tiers={r: tiers[r] for r in rates[:-1]}, midi=midi,
                   midi_offset=midi_offset, run_dir=run_dir)
    out["length"] = length
    if resynth is not None:
        out["resynth"] = {"source": resynth_source,
                          **resynth_group(tiers[fine], resynth[fine], resynth[rates[0]], rates[0], fine)}
    return out


# ----------------------------------------------------------------------------- paths


def assess_job(folder: Path, midi: Path | None = None, threshold: tuple[float, str] | None = None) -> dict:
    """Diagnostics of a job folder from its files (``audio.wav``, ``tier_<rate>.wav``, meta.json);
    the MIDI and its offset come from meta.json unless ``midi`` is given."""
    meta = json.loads((folder / "meta.json").read_text())
    audio, rate = _read_mono(folder / "audio.wav")
    tiers = {int(p.stem.split("_")[1]): _read_mono(p)[0] for p in folder.glob("tier_*.wav")}
    tiers.pop(rate, None)
    given = meta.get("parameters", {}).get("midi")
    midi = midi or (Path(given) if given and Path(given).is_file() else None)
    offset = 0.0 if meta.get("parameters", {}).get("resynth") else float(meta.get("prompt_seconds") or 0.0)
    out = diagnose(audio, rate, tiers=tiers, midi=midi, midi_offset=offset, run_dir=meta.get("run"),
                   threshold=threshold, transcribe=True)
    old = meta.get("diagnostics") or {}
    out["length"] = old.get("length") or {"seconds": meta.get("seconds"),
                                          "length_decided_by_model": meta.get("length_decided_by_model"),
                                          "ended_by_end_class": meta.get("ended_by_model")}
    if "resynth" in old:  # measured at generation against the real audio (not in the job folder)
        out["resynth"] = old["resynth"]
    return {"path": str(folder), "kind": "job", **out}


def assess_audio(path: Path, midi: Path | None = None, threshold: tuple[float, str] | None = None,
                 rates=DEFAULT_RATES) -> dict:
    """Diagnostics of an audio file (a ``.mid`` with the same stem beside it is its score); its
    tiers are made as in preprocessing, giving the real-data floor of the tier and resynth measures."""
    audio, sr = _read_mono(path)
    beside = path.with_suffix(".mid")
    midi = midi or (beside if beside.is_file() else None)
    out = diagnose(audio, sr, midi=midi, threshold=threshold, transcribe=True)
    fine = max(rates)
    tiers = {r: mulaw_decode(c) for r, c in make_tiers(resample(audio, sr, fine), rates).items()}
    out["tiers"] = {"source": "preprocessed",
                    "snr_db": am.tier_consistency(tiers[fine], fine, {r: tiers[r] for r in rates[:-1]})}
    group = resynth_group(tiers[fine], tiers[fine], tiers[min(rates)], min(rates), fine)
    out["resynth"] = {k: v for k, v in group.items() if "upsampled" in k or k == "high_band_hz"}
    out["length"] = {"seconds": len(audio) / sr}
    return {"path": str(path), "kind": "audio", **out}


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    x, sr = load_audio(path)
    return to_mono(x), int(sr)


def expand_paths(paths: list[Path]) -> list[Path]:
    """Job folders and audio files; a folder of job folders stands for each of them."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "meta.json").is_file():
            # names starting with "." are unfinished writes (a job's ".tmp-" folder, a file's temporary name)
            entries = [q for q in p.iterdir() if not q.name.startswith(".")]
            inner = sorted(q for q in entries if (q / "meta.json").is_file())
            inner += sorted(q for q in entries if q.suffix.lower() in AUDIO_EXTENSIONS)
            out += inner or [p]
        else:
            out.append(p)
    return out


def assess_one(path: Path, midi: Path | None, threshold: tuple[float, str] | None) -> dict:
    """``assess_job`` for a job folder, ``assess_audio`` for a file; ``InputError`` otherwise."""
    if path.is_dir():
        if not (path / "meta.json").is_file():
            raise InputError(path, "not a job folder (no meta.json) and holds no job folders or audio")
        return assess_job(path, midi, threshold)
    if not path.is_file():
        raise InputError(path, "not found")
    return assess_audio(path, midi, threshold)


def assess_paths(paths: list[Path], midi: Path | None = None, run: Path | None = None,
                 data: Path | None = None, json_path: Path | None = None) -> dict:
    """Assess every path (bad ones are skipped and reported).  Threshold: calibrated on ``data``
    (stored in ``run`` when given), else ``run``'s calibration, else each job's run, else fallback."""
    if midi is not None and not Path(midi).is_file():
        raise ParameterError(f"{midi}: MIDI file not found")
    threshold = None
    if data is not None:
        cal = write_calibration(data, run) if run is not None else calibrate_noise(data)
        threshold = (cal["flatness_threshold"], f"calibrated on {data}")
    elif run is not None:
        threshold = noise_threshold(run)
    items, skipped = [], []
    for p in expand_paths(paths):
        try:
            items.append(assess_one(p, midi, threshold))
        except StrataError as e:
            skipped.append({"path": str(p), "reason": str(e)})
    result = {"assessed": items, "skipped": skipped, "summary": summarise(items)}
    if json_path is not None:
        atomic_write_json(json_path, result)
    return result


def item_line(item: dict) -> str:
    """One readable line per assessment for the command line."""
    score, noise = item.get("score") or {}, item.get("noise") or {}
    parts = [f"{item['path']}: {item['seconds']:.1f} s"]
    if score:
        parts.append(f"chroma {score['chroma_agreement']:.3f} (chance {score['chroma_chance']:.3f}, "
                     f"lift {score['chroma_lift']:+.3f}, reference {_fmt(score['chroma_reference'])})")
    notes = item.get("transcription") or {}
    if notes:
        parts.append(f"note F1 {notes['f1']:.3f} (pitch class {notes['pitch_class_f1']:.3f}; rendering "
                     f"{_fmt(notes['reference_f1'])}/{_fmt(notes['reference_pitch_class_f1'])})")
    parts.append(f"flatness {_fmt(noise.get('flatness_median'), '.4f')}, noisy {noise.get('noisy_share', 0):.0%}")
    bands = item.get("bands") or {}
    if any(v is not None for v in bands.values()):
        ref = item.get("bands_reference") or {}
        parts.append("bands " + "/".join(_fmt(v, ".1f") for v in bands.values()) + " dB re 0-1 kHz"
                     + (" (rendering " + "/".join(_fmt(v, ".1f") for v in ref.values()) + ")" if ref else ""))
    snr = (item.get("tiers") or {}).get("snr_db") or {}
    if snr:
        parts.append("tier SNR " + "/".join(f"{v:.1f}" for v in snr.values()) + " dB")
    if (item.get("resynth") or {}).get("lsd_db") is not None:
        parts.append(f"LSD {item['resynth']['lsd_db']:.1f} dB (upsampled {item['resynth']['lsd_upsampled_db']:.1f})")
    return "; ".join(parts)


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


SUMMARY_KEYS = (("score", "chroma_agreement"), ("score", "chroma_chance"), ("score", "chroma_reference"),
                ("score", "chroma_lift"), ("transcription", "f1"), ("transcription", "pitch_class_f1"),
                ("transcription", "reference_f1"), ("transcription", "reference_pitch_class_f1"),
                ("bands", "1-2k"), ("bands", "2-4k"), ("bands", "4-8k"),
                ("bands_reference", "1-2k"), ("bands_reference", "2-4k"), ("bands_reference", "4-8k"),
                ("noise", "flatness_median"), ("noise", "noisy_share"),
                ("resynth", "lsd_db"), ("resynth", "lsd_upsampled_db"), ("resynth", "lsd_high_db"),
                ("resynth", "lsd_upsampled_high_db"))


# summary names: "note_f1", "band_db_1-2k", "band_reference_db_1-2k", ...
SUMMARY_PREFIX = {"transcription": "note_", "bands": "band_db_", "bands_reference": "band_reference_db_"}


def summarise(items: list[dict]) -> dict:
    """Mean of the main measures over the items that have them (``tiers`` per rate)."""
    values: dict[str, list[float]] = {}
    for item in items:
        for group, key in SUMMARY_KEYS:
            v = (item.get(group) or {}).get(key)
            if v is not None:
                values.setdefault(SUMMARY_PREFIX.get(group, "") + key, []).append(v)
        for rate, v in ((item.get("tiers") or {}).get("snr_db") or {}).items():
            values.setdefault(f"tier_snr_db_{rate}", []).append(v)
    return {"items": len(items), **{k: float(np.mean(v)) for k, v in values.items()}}
