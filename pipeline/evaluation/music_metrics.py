"""Measures of the music for ``bench/quality.py`` (pure functions: numpy, scipy, librosa, scikit-learn).

- Band levels: power of 1-2, 2-4 and 4-8 kHz relative to 0-1 kHz (dB), median over 1 s windows
  that are not silent: how much a fine stage adds above the tier below.
- Genre recognition: a clip's features (MFCC mean and spread, CQT chroma mean, spectral shape,
  band levels) and a standardised logistic-regression classifier fitted on real training clips.
- Harmony of a continuation: mean chroma of two spans, their cosine, and their key profiles
  (correlation with the 24 rotated Krumhansl-Kessler profiles).
- ROC AUC of two score sets (Mann-Whitney, ties count half).
- Share of a reference's lift over one chance level.

Every function takes mono float audio and its rate, or arrays of numbers; none reads files.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.evaluation import assess_metrics as am

BANDS = ((1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 8000.0))  # Hz, each against REFERENCE_BAND
REFERENCE_BAND = (0.0, 1000.0)
BAND_WINDOW_SECONDS = 1.0
BAND_NPERSEG = 1024  # Welch segment within a window (15.6 Hz bins at 16 kHz)
LEVEL_FLOOR_DB = -100.0  # a band with no power reads this, not -inf
SILENCE_RMS = am.SILENCE_RMS  # windows quieter than this are left out

# Krumhansl-Kessler key profiles (C major, C minor), rotated for the other tonics
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
KEY_NAMES = [f"{n} {m}" for m in ("major", "minor")
             for n in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")]
N_MFCC = 20


def band_name(lo: float, hi: float) -> str:
    return f"{lo / 1000:g}-{hi / 1000:g} kHz"


# ----------------------------------------------------------------------------- band levels


def band_levels(audio: np.ndarray, sr: int) -> dict:
    """``{"1-2 kHz": dB, "2-4 kHz": dB, "4-8 kHz": dB, "windows": n}``: per 1 s window (non-silent,
    RMS >= ``SILENCE_RMS``) 10 log10 of the band's power over the 0-1 kHz power (Welch, Hann),
    median over windows.  A band above the Nyquist frequency, or no sounding window: None."""
    # local: keeps scipy out of `import pipeline.evaluation.music_metrics` until this runs
    from scipy.signal import welch

    y = np.asarray(audio, np.float64)
    win = int(round(BAND_WINDOW_SECONDS * sr))
    n_windows = max(1, int(np.ceil(len(y) / win))) if len(y) else 0
    levels: dict[str, list[float]] = {band_name(lo, hi): [] for lo, hi in BANDS}
    used = 0
    for w in range(n_windows):
        seg = y[w * win:(w + 1) * win]
        if len(seg) < min(BAND_NPERSEG, win) // 2 or np.sqrt(np.mean(seg ** 2)) < SILENCE_RMS:
            continue
        freqs, power = welch(seg, fs=sr, window="hann", nperseg=min(BAND_NPERSEG, len(seg)))
        ref = power[(freqs >= REFERENCE_BAND[0]) & (freqs < REFERENCE_BAND[1])].sum()
        if ref <= 0:
            continue
        used += 1
        for lo, hi in BANDS:
            if lo >= sr / 2:
                continue
            band = power[(freqs >= lo) & ((freqs < hi) if hi < sr / 2 else (freqs <= hi))].sum()
            db = 10 * np.log10(band / ref) if band > 0 else LEVEL_FLOOR_DB
            levels[band_name(lo, hi)].append(max(float(db), LEVEL_FLOOR_DB))
    out: dict = {k: (float(np.median(v)) if v else None) for k, v in levels.items()}
    out["windows"] = used
    return out


def level_differences(levels: dict, reference: dict) -> dict:
    """Per band: ``levels - reference`` in dB (None where either is None)."""
    return {band_name(lo, hi): (None if levels.get(band_name(lo, hi)) is None
                                or reference.get(band_name(lo, hi)) is None
                                else levels[band_name(lo, hi)] - reference[band_name(lo, hi)])
            for lo, hi in BANDS}


def mean_abs_level_error(levels: dict, reference: dict) -> float | None:
    """Mean over the bands of |levels - reference| (dB); None if no band has both."""
    d = [abs(v) for v in level_differences(levels, reference).values() if v is not None]
    return float(np.mean(d)) if d else None


# ----------------------------------------------------------------------------- genre recognition


def clip_features(audio: np.ndarray, sr: int) -> np.ndarray:
    """Features of one clip (float64 (F,)): MFCC mean and standard deviation, CQT chroma mean,
    spectral centroid / bandwidth / roll-off (kHz) and flatness means, RMS level (dB), band levels."""
    # local: keeps librosa out of `import pipeline.evaluation.music_metrics` until this runs
    import librosa

    y = am.to_analysis_rate(audio, sr)
    rate = am.ANALYSIS_RATE
    with am.short_clips_allowed():
        mfcc = librosa.feature.mfcc(y=y, sr=rate, n_mfcc=N_MFCC, n_fft=am.N_FFT, hop_length=am.HOP)  # (20, T)
        chroma = am.chroma(y)  # (12, T)
        kw = dict(y=y, sr=rate, n_fft=am.N_FFT, hop_length=am.HOP)
        shape = [librosa.feature.spectral_centroid(**kw).mean() / 1000,
                 librosa.feature.spectral_bandwidth(**kw).mean() / 1000,
                 librosa.feature.spectral_rolloff(**kw).mean() / 1000,
                 librosa.feature.spectral_flatness(y=y, n_fft=am.N_FFT, hop_length=am.HOP).mean()]
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    levels = band_levels(y, rate)
    bands = [levels[band_name(lo, hi)] if levels[band_name(lo, hi)] is not None else LEVEL_FLOOR_DB
             for lo, hi in BANDS]
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1), chroma.mean(axis=1), shape,
                           [20 * np.log10(max(rms, 1e-6))], bands]).astype(np.float64)


def note_features(notes: Sequence[Any], seconds: float) -> np.ndarray:
    """Features of the notes heard in one clip (float64 (20,)), blind to timbre: onsets per second, mean
    polyphony, mean duration (s), pitch mean / spread / range, median inter-onset interval (s), share of
    onsets in chords (within 30 ms of another), pitch-class histogram (12, sums to 1).  ``notes``: objects
    with ``pitch``, ``start``, ``end`` (``pipeline/corpus/midi.py``'s ``Note``, a transcriber's output)."""
    if not notes:
        return np.zeros(NOTE_FEATURES)
    pitch = np.array([n.pitch for n in notes], np.float64)
    start = np.sort(np.array([n.start for n in notes], np.float64))
    dur = np.array([max(n.end - n.start, 0.0) for n in notes], np.float64)
    ioi = np.diff(start)
    chorded = np.zeros(len(start), bool)
    if len(start) > 1:
        close = ioi < 0.03
        chorded[1:] |= close
        chorded[:-1] |= close
    pcs = np.bincount(pitch.astype(int) % 12, minlength=12) / len(pitch)
    return np.concatenate([[len(notes) / seconds, dur.sum() / seconds, dur.mean(), pitch.mean() / 12, pitch.std() / 12,
                            (pitch.max() - pitch.min()) / 12, float(np.median(ioi)) if len(ioi) else seconds,
                            chorded.mean()], pcs]).astype(np.float64)


NOTE_FEATURES = 20


def clips(audio: np.ndarray, sr: int, seconds: float, most: int | None = None) -> list[np.ndarray]:
    """Non-overlapping clips of ``seconds`` (the tail shorter than that is dropped); with ``most``,
    that many evenly spaced among them."""
    n = int(round(seconds * sr))
    starts = list(range(0, len(audio) - n + 1, n)) if n > 0 else []
    if most is not None and len(starts) > most:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, most).round().astype(int)]
    return [np.asarray(audio[s:s + n]) for s in starts]


def fit_genre_classifier(features: np.ndarray, labels: Sequence[int]):
    """A fitted scikit-learn pipeline (standardise, multinomial logistic regression) on
    ``features`` (N, F) with integer ``labels`` (N,)."""
    # local: keeps sklearn out of `import pipeline.evaluation.music_metrics` until this runs
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        raise ValueError(f"genre classifier: {len(y)} training clips of {len(np.unique(y))} genre; need two or more")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    return model.fit(np.asarray(features, np.float64), y)


def accuracy(model, features: np.ndarray, labels: Sequence[int]) -> dict:
    """``{"accuracy", "clips", "per_clip": [predicted label]}`` of ``model`` (None for no clips)."""
    y = np.asarray(labels)
    if len(y) == 0:
        return {"accuracy": None, "clips": 0, "per_clip": []}
    pred = model.predict(np.asarray(features, np.float64))
    return {"accuracy": float((pred == y).mean()), "clips": int(len(y)), "per_clip": [int(p) for p in pred]}


# ----------------------------------------------------------------------------- harmony


def mean_chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mean CQT chroma (12,) of a span (unit sum; zeros for silence)."""
    c = am.chroma(am.to_analysis_rate(audio, sr)).mean(axis=1).astype(np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def key_correlations(chroma_mean: np.ndarray) -> np.ndarray:
    """Pearson correlation (24,) of a pitch-class profile with the Krumhansl-Kessler profiles of
    C..B major (0-11) and C..B minor (12-23); zeros for a flat profile."""
    c = np.asarray(chroma_mean, np.float64)
    out = np.zeros(24)
    if np.ptp(c) == 0:
        return out
    for mode, profile in enumerate((KK_MAJOR, KK_MINOR)):
        for tonic in range(12):
            out[12 * mode + tonic] = np.corrcoef(c, np.roll(profile, tonic))[0, 1]
    return out


def estimate_key(chroma_mean: np.ndarray) -> str | None:
    """The best-correlated key name ("C major" .. "B minor"); None for a flat profile."""
    k = key_correlations(chroma_mean)
    return None if not k.any() else KEY_NAMES[int(np.argmax(k))]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def harmony_similarity(a: np.ndarray, b: np.ndarray, sr: int) -> dict:
    """Two spans (same rate): cosine of their mean chroma, correlation of their key profiles, and
    whether their estimated keys agree."""
    ca, cb = mean_chroma(a, sr), mean_chroma(b, sr)
    ka, kb = key_correlations(ca), key_correlations(cb)
    key_corr = float(np.corrcoef(ka, kb)[0, 1]) if ka.any() and kb.any() else 0.0
    return {"chroma_cosine": cosine(ca, cb), "key_profile_correlation": key_corr,
            "same_key": bool(ka.any() and kb.any() and np.argmax(ka) == np.argmax(kb))}


# ----------------------------------------------------------------------------- ranking, shares


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U / (n_p n_n));
    None when either set is empty."""
    p, n = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if p.size == 0 or n.size == 0:
        return None
    greater = (p[:, None] > n[None, :]).sum()
    ties = (p[:, None] == n[None, :]).sum()
    return float((greater + 0.5 * ties) / (p.size * n.size))


def share_of_reference(value: float | None, reference: float | None, chance: float | None,
                       min_gap: float = 1e-6) -> float | None:
    """``(value - chance) / (reference - chance)``: the share of the reference's lift over one
    chance level; None when any is missing or the reference does not beat chance by ``min_gap``."""
    if value is None or reference is None or chance is None or reference - chance < min_gap:
        return None
    return float((value - chance) / (reference - chance))
