"""How the fine stages are sampled, setting by setting: what each costs or buys in the sound.

The fine stages (8 and 16 kHz) sample cooler than stage 0 (``generate.stage_temperature``) and under a
Gaussian prior around the tier below (``generate.tier_prior``).  Both were chosen when the fine stages
filled the upper bands with noise; both also hold back what the tier below lacks (the harmonics above
1 kHz).  Each ``--setting NAME:[T0,]T1,T2:SIGMA[:W[:G]]`` (fine stages' temperature factors, and stage 0's
when three are given; the prior's sigma; 0 =
off; W: the score tier's genre guidance, ``generate.score_guidance``; G: the stages' classifier-free guidance,
``generate.guidance``, or G0,G1,G2 per stage; the later fields: ``SETTING_FORMAT``, ``parse_setting``) generates
the same pieces with the same seeds: stage 0 and the
score are the same in every setting that keeps T0, W and G, only the fine stages' draw differs.

Per setting, over 8 s pieces MIDI-prompted on the test split's tracks with MIDI, genre-prompted
(``--per-genre`` seeds each) and with no prompt at all (``--unconditional N``; against every genre's real test audio):

- band levels (1-2, 2-4, 4-8 kHz against 0-1 kHz): MIDI pieces against a plain FluidSynth rendering of
  the same 8 s, genre pieces against the median of the genre's real test audio; mean absolute dB;
- noise: the share of 1 s windows flatter than the run's calibrated threshold, pieces with any, which windows
  (``noisy_windows``; pieces whose last second is noisy); and in the 1-4 kHz band alone (noise there hides under a
  tonal band below 1 kHz): the share of windows flatter there than the real test audio's 99th percentile, pieces
  with at most 5% such windows;
- the tail (``tail_bands_db``): a genre piece's 0-1 and 4-8 kHz levels after its score's last note, beside the same
  score rendered plain by FluidSynth (``rendering_tail_bands_db``; run with ``STRATA_SOUNDFONT`` set as the corpus
  was rendered): what the stages draw where a release decays;
- the tier SNR at each tier (each tier's low band against the tier below);
- level (RMS dBFS) against the genre's real test audio, and the opening: the level of the first 50, 50-150
  and 150-300 ms against 0.5-1.5 s's, beside the real test tracks' (median), and pieces whose first 1 s
  window is noisy;
- note F1 (basic-pitch against the MIDI) for MIDI pieces, against the plain rendering's;
- bursts at note changes (``change_bursts_db``): per band (1-4, 4-8 kHz), the median power of the frames in the
  ``BURST_AFTER`` after each of the score's note onsets and ends over that of the frames ``CALM`` or more from any
  (dB), beside the same for the plain renderings (a real onset is louder than its sustain too);
- with ``--resynth``, the fine stages alone: each MIDI piece's test track re-synthesised from its real coarse tier
  (stage 0 skipped, ``strata generate --resynth``), its bands against the same rendering (``resynth`` in the
  summary; a piece's bands in its row): whether the fine stages give each genre its spectral balance when the
  tier below is the real one;
- the genre of the genre-prompted pieces' 4 s clips by a classifier fitted on real training clips
  (``music_metrics.clip_features``: timbre, spectrum, chroma), beside its accuracy on real test clips; and
  by one fitted on the notes basic-pitch hears in them (``note_features``: blind to timbre).

    python bench/fine_sampling.py --data demo_final/data --run demo_final/run_st1 \
        --json docs/results/fine_sampling.json
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
import silence  # noqa: E402  (bench/silence.py: the silence trap's threshold)
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)

SECONDS = 8.0
CLIP_SECONDS = 4.0
ALL = "all"  # the references of the real test audio of every genre (an unconditional piece's)
SETTING_FORMAT = ("NAME:[T0,]T1,T2:SIGMA[:W[:G[:TWIN[:STEADY[:PRE[:SHARE[:ANCHOR[:CLIP[:POWER[:TOPP[:FLOOR"
                  "[:ADAPT[:TAIL]]]]]]]]]]]]]")
DEFAULT_SETTINGS = ("run:-:-", "t1:1,1:0.1", "free:0.6,0.6:0", "t1-free:1,1:0", "t08-wide:0.8,0.8:0.3")


def parse_setting(text: str) -> dict:
    """``SETTING_FORMAT`` -> {"name", "stage_temperature" (None: the run's),
    "tier_prior" (None: the run's), "score_guidance" (the score tier's genre guidance W), "guidance" and
    "stage_guidance" (the stages' classifier-free guidance: G, or G0,G1,G2 per stage, the largest as
    ``guidance`` and each stage's share as its factor), "guidance_twin" (what the stages' twin drops:
    ``unconditional`` or ``no_genre``), "steady_scale" (``steady``: the adaptive scale reads drawn residuals /
    temperature; ``plain``: not; S0,S1,S2 of 0 or 1: per stage), "preroll_seconds" (the warm-up sampled before
    the piece and cut),
    "score_share" (S0,S1,S2 per stage, > 0: the score taps' share where notes sound, fixed), "scale_anchor"
    (A0,A1,A2 per stage: the adaptive scale's mix with the tier below's level, models/anchor.py), "scale_clip"
    (C0,C1,C2 per stage: the |residual| the adaptive scale reads, at most C times the draw's scale), "share_power"
    (P0,P1,P2 per stage: the network's share of the score taps raised to P), "stage_top_p" (N0,N1,N2 per stage: its
    nucleus mass), "scale_floor" (F0,F1,F2 per stage: the adaptive scale's floor where notes sound), "adapt_floor"
    (A0,A1,A2 per stage: the adaptive scale's floor everywhere), "tail_floor" (A0,A1,A2 per stage: that floor after
    the score's last note)}; ``-`` keeps the run's value."""
    try:
        name, temps, sigma, *rest = text.split(":")
        st = None if temps == "-" else tuple(float(v) for v in temps.split(","))
        if st is not None and len(st) == 2:
            st = (1.0, *st)  # T1,T2: the fine stages' factors, stage 0 at the run's temperature
        if st is not None and len(st) != 3:
            raise ValueError(temps)
        prior = None if sigma == "-" else float(sigma)
        if len(rest) > 13:
            raise ValueError(text)
        (w_text, g_text, twin, steady, pre_text, share_text, anchor_text, clip_text, power_text, top_text, floor_text,
         adapt_text, tail_text) = (rest + ["-"] * 13)[:13]
        adapt = None if adapt_text == "-" else tuple(float(v) for v in adapt_text.split(","))
        tail = None if tail_text == "-" else tuple(float(v) for v in tail_text.split(","))
        floor = None if floor_text == "-" else tuple(float(v) for v in floor_text.split(","))
        top_p = None if top_text == "-" else tuple(float(v) for v in top_text.split(","))
        power = None if power_text == "-" else tuple(float(v) for v in power_text.split(","))
        clip = None if clip_text == "-" else tuple(float(v) for v in clip_text.split(","))
        pre = None if pre_text == "-" else float(pre_text)
        share = None if share_text == "-" else tuple(float(v) for v in share_text.split(","))
        anchor = None if anchor_text == "-" else tuple(float(v) for v in anchor_text.split(","))
        score_w = None if w_text == "-" else float(w_text)
        per_stage = None if g_text == "-" else [float(v) for v in g_text.split(",")]
        if twin not in ("-", "unconditional", "no_genre"):
            raise ValueError(twin)
        if steady not in ("-", "steady", "plain") and set(steady.split(",")) - {"0", "1"}:
            raise ValueError(steady)
        steady_scale = None if steady == "-" else steady == "steady" if steady in ("steady", "plain") else \
            tuple(v == "1" for v in steady.split(","))
    except ValueError:
        raise SystemExit(f"--setting {text!r}: expected {SETTING_FORMAT} "
                         f"(numbers, TWIN unconditional or no_genre, STEADY steady, plain or 0/1 per stage, "
                         f"or - for the run's)") \
            from None
    numbers = [v for v in (prior, score_w, pre, *(share or ()), *(anchor or ()), *(clip or ()), 0.0) if v is not None]
    if power and min(power) <= 0:
        raise SystemExit(f"--setting {text!r}: share powers > 0 are needed")
    if top_p and not all(0 < v <= 1 for v in top_p):
        raise SystemExit(f"--setting {text!r}: nucleus masses in (0, 1] are needed")
    for values, what in ((floor, "scale floors"), (adapt, "adaptive-scale floors"), (tail, "tail floors")):
        if values and not all(0 <= v < 1 for v in values):
            raise SystemExit(f"--setting {text!r}: {what} in [0, 1) are needed")
    if not name or (st and min(st) <= 0) or min(numbers + (per_stage or [])) < 0:
        raise SystemExit(f"--setting {text!r}: a name, temperatures > 0 and sigma, W, G >= 0 are needed")
    g = None if per_stage is None else max(per_stage)
    factors = None if per_stage is None or len(per_stage) == 1 or not g else tuple(v / g for v in per_stage)
    return {"name": name, "stage_temperature": st, "tier_prior": prior, "score_guidance": score_w, "guidance": g,
            "stage_guidance": factors, "guidance_twin": None if twin == "-" else twin,
            "steady_scale": steady_scale, "preroll_seconds": pre,
            "score_share": share, "scale_anchor": anchor, "scale_clip": clip, "share_power": power,
            "stage_top_p": top_p, "scale_floor": floor, "adapt_floor": adapt, "tail_floor": tail}


def mean_abs_db(bands: dict, ref: dict) -> float | None:
    diffs = [abs(bands[b] - ref[b]) for b in ref if bands.get(b) is not None and ref.get(b) is not None]
    return round(float(np.mean(diffs)), 2) if diffs else None


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(max(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)), 1e-6)))


OPENING = ((0.0, 0.05), (0.05, 0.15), (0.15, 0.3))  # s: the opening's windows
SETTLED = (0.5, 1.5)  # s: the level they are read against


def opening_db(x: np.ndarray, sr: int) -> list[float]:
    """The level (dB) of each ``OPENING`` window against the ``SETTLED`` span's: how fast a piece starts."""
    ref = rms_db(x[int(SETTLED[0] * sr):int(SETTLED[1] * sr)])
    return [round(rms_db(x[int(a * sr):int(b * sr)]) - ref, 1) for a, b in OPENING]


HIGH_BAND = (1000.0, 4000.0)  # Hz: the band stage 1 adds, where noise hides under a tonal low band
HIGH_BAND_PERCENTILE = 99.0  # the real test windows' flatness there: above this percentile is noise


def band_flatness(x: np.ndarray, sr: int) -> np.ndarray:
    """Flatness of ``HIGH_BAND`` in each 1 s window (``assess_metrics.band_window_flatness``)."""
    from pipeline.evaluation.assess_metrics import band_window_flatness, to_analysis_rate

    return band_window_flatness(to_analysis_rate(x, sr), *HIGH_BAND)


BURST_BANDS = {"1-4k": (1000.0, 4000.0), "4-8k": (4000.0, 8000.0)}  # Hz
BURST_AFTER = 0.03  # s after a note change: its burst
CALM = 0.05  # s from every note change: the frames bursts are read against
BURST_HOP = 0.005  # s between the analysis frames (20 ms Hann windows)


def change_bursts_db(x: np.ndarray, sr: int, notes) -> dict[str, float | None]:
    """Per ``BURST_BANDS`` band: the median power (dB) of the frames whose centre lies within ``BURST_AFTER`` after
    a note onset or end of ``notes`` less the median of the frames ``CALM`` or more from every one (medians: a
    long run-away between changes does not hide the bursts); None for a band without such frames or power."""
    y = np.asarray(x, np.float64)
    hop, win = int(round(BURST_HOP * sr)), int(round(0.02 * sr))
    if len(y) < win or not notes:
        return {b: None for b in BURST_BANDS}
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop]  # (F, win)
    spec = np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2  # (F, bins)
    freqs = np.fft.rfftfreq(win, 1 / sr)
    centre = (np.arange(len(frames)) * hop + win / 2) / sr  # s
    changes = np.unique([t for n in notes for t in (n.start, n.end) if 0 <= t < len(y) / sr])
    if not len(changes):
        return {b: None for b in BURST_BANDS}
    i = np.searchsorted(changes, centre, side="right") - 1  # the last change at or before each frame
    since = np.where(i >= 0, centre - changes[np.maximum(i, 0)], np.inf)
    j = np.minimum(i + 1, len(changes) - 1)
    until = np.where(changes[j] > centre, changes[j] - centre, np.inf)
    burst, calm = since < BURST_AFTER, (since >= CALM) & (until >= CALM)
    out = {}
    for name, (lo, hi) in BURST_BANDS.items():
        power = spec[:, (freqs >= lo) & (freqs < hi)].sum(1)
        a, b = np.median(power[burst]) if burst.any() else 0.0, np.median(power[calm]) if calm.any() else 0.0
        out[name] = round(float(10 * np.log10(a / b)), 1) if a > 0 and b > 0 else None
    return out


def references(data: Path, work: Path) -> dict:
    """Per genre: the real test audio's median bands and level; per test track with MIDI: the plain
    rendering's first 8 s (bands, note F1)."""
    from pipeline.corpus.midi import read_midi
    from pipeline.corpus.transcribe import estimate_notes, note_f1
    from pipeline.evaluation.assess_metrics import band_levels
    from quality import rendering, test_tracks, tier_audio

    genres: dict[str, dict] = {}
    tracks = {}
    high_band = []  # the real test audio's 1 s windows' flatness in HIGH_BAND
    for t in test_tracks(data):
        x, sr = tier_audio(data, t)
        high_band += [float(v) for v in band_flatness(x, sr) if np.isfinite(v)]
        g = genres.setdefault(t["genre"], {"bands": [], "level_db": [], "opening_db": []})
        g["bands"].append(band_levels(x, sr))
        g["level_db"].append(rms_db(x))
        g["opening_db"].append(opening_db(x, sr))
        if t.get("midi"):
            r = rendering(t["midi"], work)
            if r is None:
                continue
            r = r[:int(SECONDS * 16000)]
            ref = [n for n in read_midi(t["midi"]) if n.start < SECONDS]
            tracks[t["id"]] = {"bands": band_levels(r, 16000),
                               "note_f1": round(note_f1(ref, estimate_notes(r, 16000))["f1"], 3),
                               "change_bursts_db": change_bursts_db(r, 16000, ref)}
    genres[ALL] = {k: [v for g in genres.values() for v in g[k]] for k in ("bands", "level_db")}  # no genre's
    out = {}
    for name, g in genres.items():
        out[name] = {"bands": {b: round(float(np.median([v[b] for v in g["bands"] if v[b] is not None])), 1)
                               for b in g["bands"][0]},
                     "level_db": round(float(np.median(g["level_db"])), 1)}
    openings = [o for name, g in genres.items() if name != ALL for o in g["opening_db"]]
    return {"genres": out, "renderings": tracks, "opening_db_median": np.median(openings, axis=0).round(1).tolist(),
            "high_band_flatness": {"band_hz": list(HIGH_BAND), "windows": len(high_band),
                                   "median": round(float(np.median(high_band)), 5),
                                   "threshold": round(float(np.percentile(high_band, HIGH_BAND_PERCENTILE)), 5),
                                   "percentile": HIGH_BAND_PERCENTILE},
            "opening_windows_seconds": OPENING}


def clip_notes(clip: np.ndarray, sr: int) -> np.ndarray:
    """``music_metrics.note_features`` of the notes basic-pitch hears in a clip (blind to timbre)."""
    from pipeline.corpus.transcribe import estimate_notes
    from pipeline.evaluation import music_metrics as mm

    return mm.note_features(estimate_notes(clip, sr), len(clip) / sr)


def classifier(data: Path):
    """Two genre classifiers fitted on 4 s clips of the real training tracks, one on their sound
    (``clip_features``), one on the notes basic-pitch hears in them (``clip_notes``); their accuracy on real
    test clips.  Returns ({"sound": model, "notes": model}, genres, {"sound": accuracy, "notes": accuracy})."""
    from pipeline.corpus.dataset import load_manifest
    from pipeline.evaluation import music_metrics as mm
    from quality import tier_audio

    manifest = load_manifest(data)
    genres = manifest["genres"]
    feats = {(split, kind): [] for split in ("train", "test") for kind in ("sound", "notes")}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for t in manifest["tracks"]:
        if t["split"] not in labels:
            continue
        x, sr = tier_audio(data, t)
        for c in mm.clips(x, sr, CLIP_SECONDS, 8):
            feats[t["split"], "sound"].append(mm.clip_features(c, sr))
            feats[t["split"], "notes"].append(clip_notes(c, sr))
            labels[t["split"]].append(genres.index(t["genre"]))
    models, real = {}, {}
    for kind in ("sound", "notes"):
        models[kind] = mm.fit_genre_classifier(np.stack(feats["train", kind]), labels["train"])
        real[kind] = mm.accuracy(models[kind], np.stack(feats["test", kind]), labels["test"]) \
            if labels["test"] else None
    return models, genres, real


def pieces(data: Path, run: Path, work: Path, setting: dict, per_genre: int, refs: dict,
           resynth: bool = False, unconditional: int = 0) -> list[dict]:
    """Generate (or reuse) the setting's pieces and measure each (``resynth``: also each MIDI piece's track
    re-synthesised from its real coarse tier; ``unconditional``: that many pieces with no genre and no MIDI,
    measured against the real test audio of all genres)."""
    from pipeline.corpus.audio import load_audio, to_mono
    from pipeline.corpus.dataset import load_manifest
    from pipeline.corpus.midi import MidiError, read_midi
    from pipeline.corpus.transcribe import estimate_notes, note_f1
    from pipeline.generation.generate import generate
    from quality import rendering

    manifest = load_manifest(data)
    tests = [t for t in manifest["tracks"] if t["split"] == "test" and t.get("midi")][:4]
    jobs = [(f"midi-{t['genre']}-{t['id'][-8:]}", {"midi": t["midi"], "genre": t["genre"]}, 1, t) for t in tests]
    if resynth:
        jobs += [(f"resynth-{t['genre']}-{t['id'][-8:]}",
                  {"midi": t["midi"], "genre": t["genre"], "resynth": t["source"]}, 1, t) for t in tests]
    jobs += [(f"genre-{g}-{s}", {"genre": g}, s, None) for g in manifest["genres"] for s in range(1, per_genre + 1)]
    jobs += [(f"uncond-{s}", {"genre": None}, s, None) for s in range(1, unconditional + 1)]
    kw_setting = {k: setting[k] for k in ("stage_temperature", "tier_prior", "score_guidance", "guidance",
                                          "stage_guidance", "guidance_twin", "steady_scale", "preroll_seconds",
                                          "score_share", "scale_anchor", "scale_clip", "share_power",
                                          "stage_top_p", "scale_floor", "adapt_floor", "tail_floor")
                  if setting.get(k) is not None}
    rows = []
    for name, kw, seed, track in jobs:
        out = work / setting["name"] / name
        if not list(out.glob("*/meta.json")):
            generate(run, out, progress=False, seconds=SECONDS, seed=seed, **kw, **kw_setting)
        folder = next(out.glob("*/meta.json")).parent
        meta = json.loads((folder / "meta.json").read_text())
        d = meta["diagnostics"]
        y, sr = load_audio(folder / "audio.wav")
        y = to_mono(y)
        genre = kw["genre"]
        real = refs["genres"][genre or ALL]  # an unconditional piece: the real audio of every genre
        ref = refs["renderings"].get(track["id"]) if track else None
        ref_bands = ref["bands"] if ref else real["bands"]
        row = {"name": name, "genre": genre, "folder": str(folder), "noisy_share": d["noise"]["noisy_share"],
               "tier_snr_db": {r: round(v, 1) for r, v in d["tiers"]["snr_db"].items()},
               "bands_db": {b: round(v, 1) for b, v in d["bands"].items() if v is not None},
               "band_error_db": mean_abs_db(d["bands"], ref_bands),
               "level_re_real_db": round(rms_db(y) - real["level_db"], 1),
               "opening_db": opening_db(y, sr), "first_window_noisy": d["noise"].get("first_noisy_seconds") == 0,
               "high_band_noisy_share": high_band_noisy_share(y, sr, refs["high_band_flatness"]["threshold"]),
               "noisy_windows": noisy_windows(y, sr, d["noise"]["flatness_threshold"])}
        row["score_draws"] = meta.get("score_draws")  # the score tier's draws (plan.SCORE_DRAWS)
        score = folder / "score.mid"
        if score.is_file():
            try:
                written = read_midi(score)
            except MidiError:  # a score without notes (the tier's last draw): no changes to look at
                written = []
            heard = [n for n in written if n.start < SECONDS]  # the notes of the piece's SECONDS
            row["change_bursts_db"] = change_bursts_db(y, sr, heard)
            row["tail_bands_db"] = tail_bands_db(y, sr, heard)
            if track is None and row["tail_bands_db"] is not None:  # the same score's plain rendering, its tail
                plain = rendering(score, work, wav=work / "renderings" / setting["name"] / f"{name}.wav")
                row["rendering_tail_bands_db"] = None if plain is None else tail_bands_db(
                    plain[:int(SECONDS * 16000)], 16000, heard)
        row["coarse_silent_share"] = coarse_silent_share(folder, score if track is None else Path(kw["midi"]))
        if track:
            notes = [n for n in read_midi(kw["midi"]) if n.start < SECONDS]
            row["note_f1"] = round(note_f1(notes, estimate_notes(y, sr))["f1"], 3)
            row["rendering_note_f1"] = ref["note_f1"] if ref else None
            row["rendering_change_bursts_db"] = ref.get("change_bursts_db") if ref else None
        rows.append(row)
        print(setting["name"], {k: v for k, v in row.items() if k != "folder"}, flush=True)
    return rows


def coarse_silent_share(folder: Path, score: Path) -> float | None:
    """Share of the piece's whole 1 s windows in which ``score`` sounds a note but the coarse tier (the job's
    lowest-rate ``tier_<rate>.wav``, stage 0's) stays below ``SILENT_DB``: the silence trap, which the finished
    audio hides when the fine stages fill the band with noise.  None: no score or no tier file."""
    from models.roll import ROLL_FPS
    from pipeline.corpus.audio import load_audio, to_mono
    from pipeline.corpus.midi import MidiError, piano_roll, read_midi

    tiers = sorted(folder.glob("tier_*.wav"), key=lambda f: int(f.stem.split("_")[1]))
    if not tiers or not score.is_file():
        return None
    try:
        notes = read_midi(score)
    except MidiError:
        return None
    y, sr = load_audio(tiers[0])
    levels = silence.dbfs(to_mono(y), sr)  # (windows,)
    sounding = silence.note_windows(piano_roll(notes, ROLL_FPS, len(levels) * ROLL_FPS), ROLL_FPS, len(levels))
    return silence.silent_share(levels, sounding)


def noisy_windows(y: np.ndarray, sr: int, threshold: float) -> list[int]:
    """The indices of the 1 s windows whose full-band flatness is above ``threshold`` (the job's ``noisy_share``,
    window by window: ``assess_metrics.window_flatness``)."""
    from pipeline.evaluation.assess_metrics import to_analysis_rate, window_flatness

    flat = window_flatness(to_analysis_rate(y, sr))
    return [i for i, v in enumerate(flat) if np.isfinite(v) and v > threshold]


def high_band_noisy_share(y: np.ndarray, sr: int, threshold: float) -> float:
    """Share of a piece's non-silent 1 s windows whose ``HIGH_BAND`` is flatter than real audio's ``threshold``."""
    flat = band_flatness(y, sr)
    flat = flat[np.isfinite(flat)]
    return round(float((flat > threshold).mean()), 3) if len(flat) else 0.0


def recognised(rows: list[dict], models: dict, genres: list[str]) -> dict:
    """The classifiers' accuracy on the 4 s clips of the genre-prompted pieces: by their sound (the keys of
    ``music_metrics.accuracy``), and in ``by_notes`` by the notes basic-pitch hears in them."""
    from pipeline.corpus.audio import load_audio, to_mono
    from pipeline.evaluation import music_metrics as mm

    x, n, y = [], [], []
    for r in rows:
        if not r["name"].startswith("genre-"):
            continue
        a, sr = load_audio(Path(r["folder"]) / "audio.wav")
        for c in mm.clips(to_mono(a), sr, CLIP_SECONDS):
            x.append(mm.clip_features(c, sr))
            n.append(clip_notes(c, sr))
            y.append(genres.index(r["genre"]))
    if not x:
        return {**mm.accuracy(models["sound"], np.zeros((0, 1)), []), "by_notes": None}
    return {**mm.accuracy(models["sound"], np.stack(x), y), "truth": y,  # per_clip's asked genres
            "by_notes": mm.accuracy(models["notes"], np.stack(n), y)}


TAIL_BANDS = {"0-1k": (0.0, 1000.0), "4-8k": (4000.0, 8000.0)}  # Hz
TAIL_AFTER = 0.1  # s after the score's last note ends: the tail, where no note sounds
TAIL_MIN = 0.2  # s: a shorter tail is not read


def tail_bands_db(x: np.ndarray, sr: int, notes) -> dict[str, float] | None:
    """Per ``TAIL_BANDS`` band, its level (dBFS) in the piece's tail, from ``TAIL_AFTER`` after the last note of
    ``notes`` ends to the end (None: no notes, or a tail under ``TAIL_MIN``): what the stages draw where the score
    is silent.  Real renderings decay there to silence in every band; a stage whose adaptive scale has an absolute
    floor keeps drawing its band at that floor's level, heard as hiss and read as a noisy (flat) last window."""
    if not notes:
        return None
    start = int(round((max(n.end for n in notes) + TAIL_AFTER) * sr))
    y = np.asarray(x[start:], np.float64)
    if len(y) < TAIL_MIN * sr:
        return None
    window = np.hanning(len(y))
    spec = np.abs(np.fft.rfft(y * window)) ** 2 / (window ** 2).sum()  # power per bin
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    return {name: round(float(10 * np.log10(max(2 * spec[(freqs >= lo) & (freqs < hi)].sum() / len(y), 1e-12))), 1)
            for name, (lo, hi) in TAIL_BANDS.items()}


def summary(rows: list[dict], genre_acc: dict) -> dict:
    def of(kind):
        sel = [r for r in rows if r["name"].startswith(kind)]
        if not sel:
            return None
        snrs = [min(r["tier_snr_db"].values()) for r in sel]
        out = {"pieces": len(sel), "band_error_db_mean": round(float(np.mean([r["band_error_db"] for r in sel])), 2),
               "bands_db_median": {b: round(float(np.median([r["bands_db"][b] for r in sel if b in r["bands_db"]])), 1)
                                   for b in sel[0]["bands_db"]},
               "noisy_share_mean": round(float(np.mean([r["noisy_share"] for r in sel])), 3),
               "pieces_with_noise": sum(r["noisy_share"] > 0 for r in sel),
               "pieces_95pct_windows_clean": sum(r["noisy_share"] <= 0.05 for r in sel),
               "pieces_last_window_noisy": sum(bool(w) and w[-1] == round(SECONDS) - 1  # the piece's last second
                                               for w in (r.get("noisy_windows") or [] for r in sel)),
               "tier_snr_db_min": min(snrs), "pieces_all_tiers_snr_20db": sum(s >= 20 for s in snrs),
               "level_re_real_db_median": round(float(np.median([r["level_re_real_db"] for r in sel])), 1),
               "pieces_level_within_10db": sum(abs(r["level_re_real_db"]) <= 10 for r in sel),
               "opening_db_median": np.median([r["opening_db"] for r in sel], axis=0).round(1).tolist(),
               "pieces_first_window_noisy": sum(r["first_window_noisy"] for r in sel),
               "high_band_noisy_share_mean": round(float(np.mean([r["high_band_noisy_share"] for r in sel])), 3),
               "pieces_95pct_high_band_clean": sum(r["high_band_noisy_share"] <= 0.05 for r in sel),
               "pieces_score_drawn_again": sum((r.get("score_draws") or 1) > 1 for r in sel)}
        silent = [r["coarse_silent_share"] for r in sel if r.get("coarse_silent_share") is not None]
        if silent:  # the silence trap: stage 0 silent through sounding notes in any 1 s window
            out["pieces_coarse_silent"] = sum(v > 0 for v in silent)
            out["coarse_silent_share_mean"] = round(float(np.mean(silent)), 3)
        for key in ("change_bursts_db", "rendering_change_bursts_db"):  # the pieces', the plain renderings'
            bursts = [r[key] for r in sel if r.get(key)]
            if bursts:
                out[f"{key}_median"] = {b: round(float(np.median([v[b] for v in bursts if v[b] is not None])), 1)
                                        for b in BURST_BANDS if any(v[b] is not None for v in bursts)}
        tails = [r["tail_bands_db"] for r in sel if r.get("tail_bands_db")]
        if tails:  # the pieces whose score ends before the piece does: the bands' levels where no note sounds
            out["tail_bands_db_median"] = {b: round(float(np.median([t[b] for t in tails])), 1) for b in TAIL_BANDS}
            out["pieces_with_tail"] = len(tails)
        plain = [r["rendering_tail_bands_db"] for r in sel if r.get("rendering_tail_bands_db")]
        if plain:  # the same scores rendered by FluidSynth: where a real release goes after the last note
            out["rendering_tail_bands_db_median"] = {b: round(float(np.median([t[b] for t in plain])), 1)
                                                     for b in TAIL_BANDS}
        f1 = [(r["note_f1"], r["rendering_note_f1"]) for r in sel if r.get("note_f1") is not None]
        if f1:
            out["note_f1_mean"] = round(float(np.mean([a for a, _ in f1])), 3)
            ren = [b for _, b in f1 if b]
            out["rendering_note_f1_mean"] = round(float(np.mean(ren)), 3) if ren else None
        return out

    out = {"midi": of("midi-"), "genre": of("genre-"), "genre_recognised": genre_acc}
    if any(r["name"].startswith("uncond-") for r in rows):
        out["unconditional"] = of("uncond-")
    if any(r["name"].startswith("resynth-") for r in rows):
        out["resynth"] = of("resynth-")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--setting", action="append", default=None,
                    help="NAME:T1,T2:SIGMA[:W[:G]] (W: the score tier's genre guidance, G: the stages'; repeat; "
                         "default: the run's and four others)")
    ap.add_argument("--per-genre", type=int, default=3, help="genre-prompted pieces per genre (0: none)")
    ap.add_argument("--unconditional", type=int, default=0,
                    help="pieces with no genre and no MIDI (seeds 1..N; default 0: none)")
    ap.add_argument("--work", default=None, help="pieces go to WORK/<setting>/ (default: <run>/fine_sampling/)")
    ap.add_argument("--resynth", action="store_true",
                    help="also re-synthesise each MIDI piece's track from its real coarse tier (the fine stages alone)")
    a = ap.parse_args(argv)
    settings = [parse_setting(s) for s in (a.setting or DEFAULT_SETTINGS)]
    if len({s["name"] for s in settings}) != len(settings):
        raise SystemExit("--setting: names must differ")
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    data, run = Path(a.data), Path(a.run)
    from pipeline.run import read_config

    cfg = read_config(run)
    work = Path(a.work) if a.work else run / "fine_sampling"
    refs = references(data, work)
    models, genres, real = classifier(data)
    results = {}
    for s in settings:
        rows = pieces(data, run, work, s, a.per_genre, refs, a.resynth, a.unconditional)
        results[s["name"]] = {**s, "pieces": [{k: v for k, v in r.items() if k != "folder"} for r in rows],
                              "summary": summary(rows, recognised(rows, models, genres))}
        print(s["name"], json.dumps(results[s["name"]]["summary"]), flush=True)
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "seconds": SECONDS,
           "run_sampling": {"stage_temperature": list(cfg.generate.stage_temperature),
                            "tier_prior": cfg.generate.tier_prior, "score_guidance": cfg.generate.score_guidance,
                            "guidance": cfg.generate.guidance},
           "references": refs, "genre_classifier": {"genres": genres, "real_test": real["sound"],
                                                    "real_test_by_notes": real["notes"], "clip_seconds": CLIP_SECONDS},
           "settings": results, "wall_seconds": round(time.time() - t0, 1)}
    from pipeline.io import atomic_write_json

    atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
