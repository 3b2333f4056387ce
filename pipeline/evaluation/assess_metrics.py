"""Signal measures behind ``strata assess`` (numbers only; files and jobs are in ``pipeline.evaluation.assess``).

Every measure works on mono float audio at ``ANALYSIS_RATE`` (16 kHz: the fine tier's rate by
default), so generated pieces, real tracks and the calibration are compared on one scale.

- Score agreement: frame-wise cosine similarity between the audio's CQT chroma and the
  velocity-weighted pitch-class profile of the sounding notes, averaged over frames where notes
  sound (the melody measure MusicGen reports); chance = the same with the chroma frames shuffled.
- Noise: spectral flatness of the power spectrum averaged per 1 s window; silent frames (RMS under
  ``SILENCE_RMS``) are left out, since the flatness of digital silence is 1.
- Tier consistency: SNR (dB) of the fine audio resampled to a coarser rate against that tier.
- Log-spectral distance (dB) between two signals at one rate.
- Band levels: the power of 1-2, 2-4 and 4-8 kHz relative to 0-1 kHz (dB), median over 1 s windows
  (silent windows left out): whether the fine stages add what the tier below cannot hold.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from models.roll import ROLL_FPS  # the note profile's frame rate before it is read at the chroma frames
from pipeline.corpus.audio import resample
from pipeline.corpus.midi import piano_roll

ANALYSIS_RATE = 16000  # Hz; every measure resamples its input to this rate first
HOP = 512  # analysis hop (32 ms at 16 kHz) for chroma, flatness and LSD frames
N_FFT = 2048
SILENCE_RMS = 1e-3  # frames quieter than -60 dBFS are silence, not noise
WINDOW_SECONDS = 1.0  # flatness is averaged over windows of this length
CHANCE_SHUFFLES = 8  # time shuffles averaged for the chance level (seeded)
SNR_CAP_DB = 100.0  # an exact match reports this instead of infinity
LSD_FLOOR = 1e-10  # power floor of the LSD spectra (-100 dB re a full-scale sine's bin)
BANDS = {"1-2k": (1000, 2000), "2-4k": (2000, 4000), "4-8k": (4000, 8000)}  # Hz, levels against 0-1 kHz
BAND_FLOOR_DB = -120.0  # a band with no power reads this (not -inf)


def to_analysis_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 ``(n,)`` at ``rate`` -> ``ANALYSIS_RATE`` (band-limited, time-aligned)."""
    return resample(np.asarray(audio, np.float32), int(rate), ANALYSIS_RATE)


@contextmanager
def short_clips_allowed():
    """Silence librosa's "n_fft is too large for input signal" warning (short clips are measured)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        yield


# ----------------------------------------------------------------------------- score agreement


def chroma(audio: np.ndarray) -> np.ndarray:
    """CQT chroma ``(12, T)`` of audio at ``ANALYSIS_RATE``; frame i is centred at ``i * HOP``."""
    # local: keeps librosa out of `import pipeline.evaluation.assess_metrics` until this runs
    import librosa

    with short_clips_allowed():
        return librosa.feature.chroma_cqt(y=np.asarray(audio, np.float32), sr=ANALYSIS_RATE, hop_length=HOP)


def pitch_class_profile(notes: Sequence, n_frames: int, offset_seconds: float = 0.0) -> np.ndarray:
    """Velocity-weighted pitch classes of the sounding notes at the chroma frames: ``(12, n_frames)``.

    ``offset_seconds``: where MIDI time 0 lies in the audio (after an audio prompt).
    """
    velocity = piano_roll(notes, fps=ROLL_FPS)[0].astype(np.float64)  # (128, F)
    pcp = np.zeros((12, velocity.shape[1]))
    for pc in range(12):
        pcp[pc] = velocity[pc::12].sum(axis=0)
    times = np.arange(n_frames) * HOP / ANALYSIS_RATE - offset_seconds  # (T,) MIDI time of frame
    idx = np.floor(times * ROLL_FPS + 1e-9).astype(np.int64)
    inside = (idx >= 0) & (idx < pcp.shape[1])
    out = np.zeros((12, n_frames))
    out[:, inside] = pcp[:, idx[inside]]
    return out


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean over frames where ``b`` is non-zero of cos(a[:, t], b[:, t]); None if there are none."""
    keep = b.sum(axis=0) > 0
    if not keep.any():
        return None
    a, b = a[:, keep], b[:, keep]
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    cos = np.where(norms > 0, (a * b).sum(axis=0) / np.maximum(norms, 1e-12), 0.0)
    return float(cos.mean())


def chroma_agreement(audio: np.ndarray, notes: Sequence, offset_seconds: float = 0.0,
                     seed: int = 0) -> dict | None:
    """``chroma_agreement`` and ``chroma_chance`` (time-shuffled chroma) of audio at ``ANALYSIS_RATE``
    against the notes; ``frames`` = chroma frames with sounding notes.  None if no note sounds."""
    c = chroma(audio)  # (12, T)
    profile = pitch_class_profile(notes, c.shape[1], offset_seconds)  # (12, T)
    agreement = mean_cosine(c, profile)
    if agreement is None:
        return None
    rng = np.random.default_rng(seed)
    chance = np.mean([mean_cosine(c[:, rng.permutation(c.shape[1])], profile) for _ in range(CHANCE_SHUFFLES)])
    return {"chroma_agreement": agreement, "chroma_chance": float(chance),
            "frames": int((profile.sum(axis=0) > 0).sum())}


# ----------------------------------------------------------------------------- noise


def window_flatness(audio: np.ndarray) -> np.ndarray:
    """Mean spectral flatness (power spectrum) of the non-silent frames in each 1 s window of audio
    at ``ANALYSIS_RATE``: ``(windows,)``, NaN for a window that is all silence."""
    # local: keeps librosa out of `import pipeline.evaluation.assess_metrics` until this runs
    import librosa

    y = np.asarray(audio, np.float32)
    if y.shape[0] == 0:
        return np.zeros(0)
    with short_clips_allowed():
        flat = librosa.feature.spectral_flatness(y=y, n_fft=N_FFT, hop_length=HOP, power=2.0)[0]  # (T,)
    return _window_means(y, flat)


def _window_means(y: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per 1 s window of ``y`` (at ``ANALYSIS_RATE``), the mean of a per-frame value ``frames`` (T,) (frames of
    ``N_FFT`` every ``HOP``) over its non-silent frames: ``(windows,)``, NaN for an all-silent window."""
    import librosa

    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)[0][: frames.shape[0]]  # (T,) same framing
    window = (np.arange(frames.shape[0]) * HOP / ANALYSIS_RATE // WINDOW_SECONDS).astype(np.int64)
    n_windows = max(1, int(np.ceil(y.shape[0] / ANALYSIS_RATE / WINDOW_SECONDS)))
    window = np.minimum(window, n_windows - 1)
    sound = rms >= SILENCE_RMS
    sums = np.bincount(window[sound], weights=frames[sound], minlength=n_windows)
    counts = np.bincount(window[sound], minlength=n_windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def band_window_flatness(audio: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Mean spectral flatness of the power spectrum's bins in [lo_hz, hi_hz) over the non-silent frames of
    each 1 s window of audio at ``ANALYSIS_RATE``: ``(windows,)``, NaN for an all-silent window.  Noise in
    one band under a tonal band below it: the full-band flatness (``window_flatness``) stays low there."""
    import librosa

    y = np.asarray(audio, np.float32)
    if y.shape[0] == 0:
        return np.zeros(0)
    with short_clips_allowed():
        power = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP)) ** 2  # (F, T)
    freqs = librosa.fft_frequencies(sr=ANALYSIS_RATE, n_fft=N_FFT)
    band = power[(freqs >= lo_hz) & (freqs < hi_hz)].astype(np.float64) + 1e-20  # (F_band, T)
    return _window_means(y, np.exp(np.log(band).mean(0)) / band.mean(0))  # geometric over arithmetic mean


def noise_summary(audio: np.ndarray, threshold: float) -> dict:
    """Median window flatness, share of (non-silent) windows above ``threshold`` and the time of the
    first such window (None when none is)."""
    flat = window_flatness(audio)
    sound = flat[~np.isnan(flat)]
    above = np.flatnonzero(np.nan_to_num(flat, nan=-1.0) > threshold)
    return {
        "flatness_median": float(np.median(sound)) if sound.size else None,
        "flatness_threshold": float(threshold),
        "noisy_share": float((sound > threshold).mean()) if sound.size else 0.0,
        "first_noisy_seconds": float(above[0] * WINDOW_SECONDS) if above.size else None,
        "windows": int(flat.size),
        "silent_windows": int(flat.size - sound.size),
    }


# ----------------------------------------------------------------------------- tiers and spectra


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(|ref|^2 / |ref - est|^2)`` over the common length, capped at ``SNR_CAP_DB``."""
    n = min(reference.shape[0], estimate.shape[0])
    ref, est = np.asarray(reference[:n], np.float64), np.asarray(estimate[:n], np.float64)
    signal, error = float((ref ** 2).sum()), float(((ref - est) ** 2).sum())
    if error <= signal * 10 ** (-SNR_CAP_DB / 10):
        return SNR_CAP_DB
    return float(10 * np.log10(max(signal, 1e-30) / error))


def tier_consistency(fine: np.ndarray, fine_rate: int, tiers: dict[int, np.ndarray]) -> dict[str, float]:
    """SNR (dB) of ``fine`` resampled to each coarser rate against ``tiers[rate]`` (float audio)."""
    return {str(rate): snr_db(tier, resample(fine, fine_rate, rate))
            for rate, tier in sorted(tiers.items()) if rate < fine_rate}


def log_power_spectrum(audio: np.ndarray) -> np.ndarray:
    """``10 log10`` power ``(bins, T)`` of an STFT scaled so a full-scale sine peaks near 0 dB."""
    # local: keeps librosa out of `import pipeline.evaluation.assess_metrics` until this runs
    import librosa

    window = np.hanning(N_FFT)
    with short_clips_allowed():
        spec = librosa.stft(np.asarray(audio, np.float32), n_fft=N_FFT, hop_length=HOP, window=window)
    power = np.abs(spec) ** 2 / (window.sum() / 2) ** 2
    return 10 * np.log10(np.maximum(power, LSD_FLOOR))


def lsd_db(reference: np.ndarray, estimate: np.ndarray, rate: int, min_hz: float = 0.0) -> float:
    """Log-spectral distance (dB): mean over frames of the RMS over bins >= ``min_hz`` of the
    difference of the log power spectra; both signals at ``rate``, cut to the common length."""
    n = min(reference.shape[0], estimate.shape[0])
    a, b = log_power_spectrum(reference[:n]), log_power_spectrum(estimate[:n])
    freqs = np.arange(a.shape[0]) * rate / N_FFT
    band = freqs >= min_hz
    return float(np.sqrt(((a[band] - b[band]) ** 2).mean(axis=0)).mean())


def band_levels(audio: np.ndarray, sr: int) -> dict[str, float | None]:
    """{"1-2k", "2-4k", "4-8k": dB}: each band's power relative to 0-1 kHz's, per 1 s window of
    ``audio`` (mono, resampled to ``ANALYSIS_RATE``; a shorter clip is one window), median over the
    windows that are not silent; None for all when every window is silent."""
    y = to_analysis_rate(np.asarray(audio, np.float32), sr)
    win = int(WINDOW_SECONDS * ANALYSIS_RATE)
    starts = range(0, max(1, len(y) - win + 1), win) if len(y) >= win else [0]
    freqs = np.fft.rfftfreq(N_FFT, 1 / ANALYSIS_RATE)
    levels: dict[str, list[float]] = {name: [] for name in BANDS}
    for s in starts:
        seg = y[s:s + win].astype(np.float64)
        if seg.size == 0 or np.sqrt(np.mean(seg**2)) < SILENCE_RMS:
            continue
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(seg, (0, max(0, N_FFT - seg.size))), N_FFT)[::HOP]
        power = (np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2).sum(axis=0)  # (bins,)
        low = power[(freqs >= 0) & (freqs < 1000)].sum()
        if low <= 0:
            continue
        for name, (lo, hi) in BANDS.items():
            band = power[(freqs >= lo) & (freqs < hi)].sum()
            levels[name].append(max(BAND_FLOOR_DB, 10 * np.log10(max(band, 1e-300) / low)))
    return {name: (float(np.median(v)) if v else None) for name, v in levels.items()}
