"""Audio in and out of the cascade: decoding, mono, resampling, trimming, mu-law and tiers.

Conventions
- Float audio is ``float32`` in ``[-1, 1]``; multichannel audio is ``(channels, n)``.
- Mu-law codes are unsigned integers ``0 .. 2**bits - 1`` (``uint8`` for ``bits <= 8``,
  ``uint16`` above) in numpy and ``int64`` in torch; silence is code ``2**(bits - 1)``.
  They equal ``librosa.mu_compress(x, mu=2**bits - 1, quantize=True) + 2**(bits - 1)``;
  input outside ``[-1, 1]`` is clipped (librosa refuses it).
- ``resample`` returns exactly ``round_half_up(n * sr_out / sr_in)`` samples.
- A truncated but decodable file (a WAV whose header promises more frames than the file holds)
  is loaded as far as it is readable: libsndfile reads the frames that are present.
- Decoding: soundfile (libsndfile: wav, flac, ogg, aiff, and mp3 from libsndfile 1.1), then
  librosa/audioread as a fallback.  Accepted extensions: ``AUDIO_EXTENSIONS``.
- Hostile files: a source rate outside ``MIN_RATE .. MAX_RATE`` Hz or more than ``MAX_CHANNELS``
  channels is refused with one line before any sample is decoded.  ``prepare_audio`` decodes at
  most ``max_seconds + LEAD_SECONDS`` of a long file (the crop it keeps, plus room for leading
  silence to trim), so an hour-long file costs what ten minutes cost.
- Tiers: the fine audio's tail is cropped to a multiple of ``r_K / r_0`` samples, so tier k
  has exactly ``n_0 * r_k / r_0`` samples (``make_tiers``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import soxr

from pipeline.errors import InputError
from pipeline.io import check_readable

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
MIN_RATE, MAX_RATE = 1000, 768000  # Hz: source rates outside are refused (1 Hz would resample to millions x)
MAX_CHANNELS = 64
LEAD_SECONDS = 60.0  # decoded beyond ``max_seconds``: leading silence that the trim may remove


class AudioError(InputError):
    """An audio input that cannot be used; the message is ``"<path>: <reason>"``."""


# ----------------------------------------------------------------------------- decoding


def load_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``(channels, n)`` and its rate; soundfile first, then librosa.

    ``max_seconds``: decode only the first ``max_seconds`` (memory stays bounded for long files).
    """
    path = Path(path)
    _check_file(path)
    try:
        x, sr = _read_soundfile(path, max_seconds)
    except AudioError:
        raise
    except Exception as first:  # libsndfile could not decode: try audioread (mp3 etc.)
        try:
            x, sr = _read_librosa(path, max_seconds)
        except AudioError:
            raise
        except Exception:
            raise AudioError(path, f"cannot decode audio ({_short(first)})") from None
    _check_format(path, sr, x.shape[0])
    if x.shape[1] == 0:
        raise AudioError(path, "no samples")
    if not np.isfinite(x).all():
        raise AudioError(path, "contains NaN or infinite samples")
    return x, sr


def _check_file(path: Path) -> None:
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(path, f"unknown audio extension {path.suffix!r} (expected {', '.join(AUDIO_EXTENSIONS)})")
    check_readable(path, AudioError)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise AudioError(path, f"cannot read file ({e.strerror or e})") from None


def _check_format(path: Path, sr: int, channels: int) -> None:
    """Refuse rates and channel counts no real recording has (before or after decoding)."""
    if not MIN_RATE <= sr <= MAX_RATE:
        raise AudioError(path, f"sample rate {sr} Hz is outside {MIN_RATE}..{MAX_RATE} Hz (corrupt header?)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(path, f"{channels} channels (expected 1..{MAX_CHANNELS}; corrupt header?)")


def _read_soundfile(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        _check_format(path, int(f.samplerate), int(f.channels))  # before a sample is decoded
        frames = -1 if max_seconds is None else int(math.ceil(max_seconds * f.samplerate))
        data = f.read(frames=frames, dtype="float32", always_2d=True)  # (n, channels)
    return np.ascontiguousarray(data.T), int(f.samplerate)


def _read_librosa(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    # local: keeps librosa out of `import pipeline.corpus.audio` until this runs
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32, duration=max_seconds)
    y = np.atleast_2d(y)  # (channels, n)
    return np.ascontiguousarray(y, dtype=np.float32), int(sr)


def _duration(path: Path) -> float | None:
    """The file's length in seconds from its header (None when the header does not say)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate > 0 and 0 <= info.frames < 2**62 else None
    except Exception:  # noqa: BLE001 - load_audio reports undecodable files
        return None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


# ----------------------------------------------------------------------------- signal steps


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: ``(channels, n)`` or ``(n,)`` -> float32 ``(n,)``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(None, f"expected (channels, n) audio, got shape {x.shape}")
    return x.mean(axis=0, dtype=np.float64).astype(np.float32)


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    """Output length of ``resample``: ``n * sr_out / sr_in`` rounded half up (exact integers)."""
    return (n * sr_out + sr_in // 2) // sr_in


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling with soxr ('HQ'); ``(..., n)`` -> ``(..., resampled_length(n))``.

    soxr compensates its filter delay, so the output is time-aligned with the input; its tail is
    cropped or zero-padded to the exact length.
    """
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x.copy()
    n_out = resampled_length(x.shape[-1], sr_in, sr_out)
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1] + (0,), np.float32)
    if x.ndim == 1:
        y = soxr.resample(x, sr_in, sr_out, quality="HQ")  # (n_out',)
    elif x.ndim == 2:
        y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ").T  # (C, n_out')
    else:
        raise AudioError(None, f"expected (n,) or (channels, n) audio, got shape {x.shape}")
    return _fit_length(np.asarray(y, dtype=np.float32), n_out)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.shape[-1] >= n:
        return np.ascontiguousarray(y[..., :n])
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)


def peak_normalise(x: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale so that ``max |x| == peak``; all-silent audio raises ``AudioError("silent")``."""
    x = np.asarray(x, dtype=np.float32)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top <= 0.0 or not math.isfinite(top):
        raise AudioError(None, "silent")
    return (x * np.float32(peak / top)).astype(np.float32)


def silence_bounds(
    x: np.ndarray, sr: int, top_db: float = 40.0, frame_seconds: float = 0.02, margin_seconds: float = 0.05
) -> tuple[int, int]:
    """Sample range ``[start, end)`` that ``trim_silence`` keeps (see there for the rule)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1]
    frame = max(1, int(round(frame_seconds * sr)))
    power = (x.astype(np.float64) ** 2).reshape(-1, n).mean(axis=0)  # (n,) mean over channels
    n_frames = -(-n // frame)
    padded = np.pad(power, (0, n_frames * frame - n))
    counts = np.full(n_frames, frame, np.float64)
    if n_frames:
        counts[-1] = n - (n_frames - 1) * frame
    rms = np.sqrt(padded.reshape(n_frames, frame).sum(axis=1) / counts)  # (n_frames,)
    top = float(rms.max()) if n_frames else 0.0
    if top <= 0.0:
        raise AudioError(None, "silent")
    sound = np.flatnonzero(rms >= top * 10.0 ** (-top_db / 20.0))
    margin = int(round(margin_seconds * sr))
    start = max(0, int(sound[0]) * frame - margin)
    end = min(n, (int(sound[-1]) + 1) * frame + margin)
    return start, end


def trim_silence(
    x: np.ndarray, sr: int, top_db: float = 40.0, frame_seconds: float = 0.02, margin_seconds: float = 0.05
) -> np.ndarray:
    """Cut leading and trailing silence from mono ``(n,)`` (or ``(C, n)``) audio.

    The signal is cut into frames of ``frame_seconds``; a frame is *sound* when its RMS is at
    least ``loudest frame RMS * 10**(-top_db / 20)``.  Everything from ``margin_seconds``
    before the first sound frame to ``margin_seconds`` after the last one is kept.
    All-silent audio raises ``AudioError("silent")``.
    """
    start, end = silence_bounds(x, sr, top_db, frame_seconds, margin_seconds)
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[..., start:end])


def prepare_audio(
    path: str | Path,
    rate: int,
    peak: float = 0.95,
    top_db: float = 40.0,
    min_seconds: float = 2.0,
    max_seconds: float | None = 600.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load -> mono -> resample to ``rate`` -> trim -> crop to ``max_seconds`` -> peak-normalise.

    Returns float32 ``(n,)`` at ``rate`` and an info dict: ``source_rate``, ``channels``,
    ``source_seconds``, ``start_seconds`` (time in the source of output sample 0: shift an
    aligned MIDI by it), ``trimmed_seconds``, ``seconds`` and ``cropped``.  Normalising last
    is the same as normalising before the trim (the trim is relative to the loudest frame) and
    keeps the peak exact after a crop.
    Raises ``AudioError(path, reason)``: undecodable, silent, or too short after trimming.
    """
    source_seconds = _duration(path)
    x, sr = load_audio(path, None if max_seconds is None else max_seconds + LEAD_SECONDS)
    channels, n_source = x.shape
    try:
        y = resample(to_mono(x), sr, rate)  # (n,) at rate
        start, end = silence_bounds(y, rate, top_db)
        y = y[start:end]
    except AudioError as e:
        raise AudioError(path, e.reason) from None
    seconds = y.shape[0] / rate
    if seconds < min_seconds:
        raise AudioError(path, f"too short after trimming: {seconds:.1f} s < {min_seconds:.1f} s")
    cropped = max_seconds is not None and seconds > max_seconds
    cropped = cropped or (source_seconds is not None and n_source / sr < source_seconds - 1e-6)  # not all read
    if cropped:
        y = y[: int(max_seconds * rate)]
    try:
        y = peak_normalise(y, peak)
    except AudioError as e:
        raise AudioError(path, e.reason) from None
    info = {
        "source_rate": sr,
        "channels": channels,
        "source_seconds": max(source_seconds or 0.0, n_source / sr),
        "start_seconds": start / rate,
        "trimmed_seconds": seconds,
        "seconds": y.shape[0] / rate,
        "cropped": bool(cropped),
    }
    return y, info


# ----------------------------------------------------------------------------- mu-law


# one codec for data and models (models/mulaw.py); re-exported here for the data side
from models.mulaw import (  # noqa: E402,F401
    mulaw_decode,
    mulaw_decode_torch,
    mulaw_encode,
    mulaw_encode_torch,
)

# ----------------------------------------------------------------------------- tiers


def tier_crop_length(n: int, rates: Sequence[int]) -> int:
    """Fine-tier length after cropping the tail to a multiple of ``r_K / r_0`` samples."""
    step = max(rates) // min(rates)
    return (n // step) * step


def make_tiers(audio_fine: np.ndarray, rates: Sequence[int], bits: int = 8) -> dict[int, np.ndarray]:
    """Mu-law tiers of mono audio at the finest rate (DESIGN section 2), exactly aligned.

    The tail is cropped to a multiple of ``r_K / r_0`` samples; then ``x_K = mulaw(audio)``
    and ``x_k = mulaw(resample(mulaw_decode(x_K), r_K -> r_k))``, so tier k has exactly
    ``n_0 * r_k / r_0`` samples.  Returns ``{rate: codes}`` for every rate.
    """
    rates = sorted(int(r) for r in rates)
    for lo, hi in zip(rates, rates[1:]):
        if hi % lo:
            raise ValueError(f"tier rates must be integer multiples: {hi} is not a multiple of {lo}")
    audio_fine = np.asarray(audio_fine, dtype=np.float32)
    if audio_fine.ndim != 1:
        raise ValueError(f"make_tiers expects mono (n,) audio, got shape {audio_fine.shape}")
    r_fine = rates[-1]
    n = tier_crop_length(audio_fine.shape[0], rates)
    x_fine = mulaw_encode(audio_fine[:n], bits)  # (n_K,)
    decoded = mulaw_decode(x_fine, bits)  # (n_K,) float32
    tiers = {r_fine: x_fine}
    for r in rates[:-1]:
        low = resample(decoded, r_fine, r)  # (n_K * r / r_K,)
        assert low.shape[0] == n * r // r_fine
        tiers[r] = mulaw_encode(low, bits)
    return {r: tiers[r] for r in rates}
