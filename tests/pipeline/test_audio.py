"""pipeline.corpus.audio: decoding, errors, resampling, trimming, mu-law parity, aligned tiers."""

from __future__ import annotations

import os

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.corpus.audio import (
    AudioError,
    load_audio,
    make_tiers,
    mulaw_decode,
    mulaw_decode_torch,
    mulaw_encode,
    mulaw_encode_torch,
    peak_normalise,
    prepare_audio,
    resample,
    resampled_length,
    tier_crop_length,
    to_mono,
    trim_silence,
)
from pipeline.errors import StrataError


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "aiff"])
def test_load_each_format(tmp_path, ext):
    x = sine(440, 0.5, 16000)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 16000)
    y, sr = load_audio(path)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (1, 8000)
    tol = 0.05 if ext == "ogg" else 1e-3  # ogg is lossy
    assert np.max(np.abs(y[0] - x)) < tol or ext == "ogg" and np.corrcoef(y[0], x)[0, 1] > 0.99


def test_load_multichannel_and_to_mono(tmp_path):
    left, right = sine(440, 0.25, 8000, 0.4), sine(220, 0.25, 8000, 0.2)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    y, sr = load_audio(tmp_path / "st.wav")
    assert y.shape == (2, 2000) and sr == 8000
    mono = to_mono(y)
    assert mono.shape == (2000,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    assert to_mono(mono) is mono or np.array_equal(to_mono(mono), mono)


def _wav_bytes(tmp_path, seconds=1.0) -> bytes:
    sf.write(tmp_path / "ok.wav", sine(440, seconds, 16000), 16000)
    return (tmp_path / "ok.wav").read_bytes()


def _write_nan(p):
    x = sine(440, 0.5, 16000)
    x[100] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")


def _write_inf(p):
    x = sine(440, 0.5, 16000)
    x[100] = np.inf
    sf.write(p, x, 16000, subtype="FLOAT")


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("empty.wav", lambda p, b: p.write_bytes(b""), "empty file"),
        ("random.wav", lambda p, b: p.write_bytes(np.random.default_rng(0).bytes(4000)), "cannot decode"),
        ("header.wav", lambda p, b: p.write_bytes(b[:20]), "cannot decode"),
        ("nan.wav", lambda p, b: _write_nan(p), "NaN"),
        ("inf.wav", lambda p, b: _write_inf(p), "NaN or infinite"),
        ("zero.wav", lambda p, b: sf.write(p, np.zeros(0, np.float32), 16000), "no samples"),
        ("notes.txt", lambda p, b: p.write_text("hello"), "unknown audio extension"),
        ("missing.wav", lambda p, b: None, "file not found"),
    ],
)
def test_load_errors(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path, _wav_bytes(tmp_path))
    with pytest.raises(AudioError) as info:
        load_audio(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and reason in msg
    assert isinstance(info.value, StrataError) and isinstance(info.value, ValueError)


def test_truncated_data_loads_what_is_readable(tmp_path):
    """A WAV cut inside its data chunk is decodable: we load the frames that are present."""
    b = _wav_bytes(tmp_path, seconds=1.0)  # 16000 PCM_16 frames
    (tmp_path / "cut.wav").write_bytes(b[: 44 + 2 * 6000])
    y, sr = load_audio(tmp_path / "cut.wav")
    assert sr == 16000 and y.shape == (1, 6000)


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.wav"
    sf.write(path, sine(440, 0.5, 16000), 16000)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read mode-000 files (root)")
        with pytest.raises(AudioError, match="permission denied"):
            load_audio(path)
    finally:
        path.chmod(0o644)


# ----------------------------------------------------------------------------- signal steps


@pytest.mark.parametrize("sr_in, sr_out", [(8000, 16000), (96000, 16000), (44100, 16000), (16000, 2000), (22050, 8000)])
def test_resample_length_and_content(sr_in, sr_out):
    x = sine(300, 1.013, sr_in)
    y = resample(x, sr_in, sr_out)
    n_out = resampled_length(len(x), sr_in, sr_out)
    assert n_out == (len(x) * sr_out + sr_in // 2) // sr_in
    assert y.shape == (n_out,) and y.dtype == np.float32
    ref = sine(300, len(y) / sr_out, sr_out)[: len(y)]
    mid = slice(len(y) // 10, -len(y) // 10)  # away from edge effects
    assert np.max(np.abs(y[mid] - ref[mid])) < 1e-2


def test_resample_is_band_limited():
    x = sine(7000, 1.0, 48000)  # above the 8 kHz output's Nyquist (4 kHz)
    y = resample(x, 48000, 8000)
    assert np.sqrt(np.mean(y[800:-800] ** 2)) < 1e-3


def test_resample_multichannel():
    x = np.stack([sine(200, 0.5, 16000), sine(400, 0.5, 16000)])
    y = resample(x, 16000, 8000)
    assert y.shape == (2, 4000)


def test_peak_normalise_and_silent():
    y = peak_normalise(sine(100, 0.1, 8000, amp=0.1), 0.9)
    assert abs(np.max(np.abs(y)) - 0.9) < 1e-6
    with pytest.raises(AudioError, match="silent"):
        peak_normalise(np.zeros(100, np.float32), 0.9)


def test_trim_silence_threshold_and_margin():
    sr = 8000
    tone = sine(440, 1.0, sr)
    quiet = np.full(sr, 1e-4, np.float32)  # -74 dB re the tone's RMS
    x = np.concatenate([quiet, tone, quiet])
    y = trim_silence(x, sr, top_db=40, frame_seconds=0.02, margin_seconds=0.05)
    assert abs(len(y) - (sr + 2 * 400)) <= 160  # tone + two 50 ms margins, within a frame
    # with a threshold below the floor nothing is trimmed
    assert len(trim_silence(x, sr, top_db=90)) == len(x)


def test_prepare_audio(tmp_path):
    sr = 44100
    x = np.concatenate([np.zeros(sr, np.float32), sine(440, 3.0, sr, 0.2), np.zeros(sr, np.float32)])
    sf.write(tmp_path / "a.wav", np.stack([x, x], axis=1), sr)
    y, info = prepare_audio(tmp_path / "a.wav", 16000, peak=0.9, top_db=40, min_seconds=2.0, max_seconds=2.5)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 40000
    assert abs(np.max(np.abs(y)) - 0.9) < 1e-6
    assert info["cropped"] and info["channels"] == 2 and info["source_rate"] == sr
    assert 3.0 <= info["trimmed_seconds"] <= 3.2
    assert 0.9 <= info["start_seconds"] <= 1.0  # one second of leading silence, minus the margin


def test_prepare_audio_errors(tmp_path):
    sf.write(tmp_path / "short.wav", np.concatenate([sine(440, 0.4, 16000), np.zeros(16000, np.float32)]), 16000)
    with pytest.raises(AudioError, match=r"short\.wav: too short after trimming: 0\.\d s < 2\.0 s"):
        prepare_audio(tmp_path / "short.wav", 16000, min_seconds=2.0)
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), 16000)
    with pytest.raises(AudioError, match="too short"):
        prepare_audio(tmp_path / "one.wav", 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(32000, np.float32), 16000)
    with pytest.raises(AudioError, match=r"silent\.wav: silent"):
        prepare_audio(tmp_path / "silent.wav", 16000)


# ----------------------------------------------------------------------------- mu-law


def _test_signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(-1, 1, 50000), rng.normal(0, 0.01, 5000), [-1.0, 0.0, 1.0, 1e-9, -1e-9]])


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 10, 12, 16])
def test_mulaw_matches_librosa(bits):
    x = _test_signal()
    mu = 2**bits - 1
    codes = mulaw_encode(x, bits)
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16)
    ref = librosa.mu_compress(x, mu=mu, quantize=True) + 2 ** (bits - 1)
    np.testing.assert_array_equal(codes, ref)
    assert codes.min() == 0 and codes.max() == mu
    assert mulaw_encode(np.zeros(3), bits).tolist() == [2 ** (bits - 1)] * 3  # silence
    expanded = librosa.mu_expand(codes.astype(np.int64) - 2 ** (bits - 1), mu=mu, quantize=True)
    np.testing.assert_array_equal(mulaw_decode(codes, bits, dtype=np.float64), expanded)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_mulaw_torch_equals_numpy(bits):
    x = _test_signal()
    codes = mulaw_encode(x, bits)
    codes_t = mulaw_encode_torch(torch.from_numpy(x), bits)
    assert codes_t.dtype == torch.int64
    np.testing.assert_array_equal(codes_t.numpy(), codes)
    codes_t32 = mulaw_encode_torch(torch.from_numpy(x.astype(np.float32)), bits)
    np.testing.assert_array_equal(codes_t32.numpy(), mulaw_encode(x.astype(np.float32), bits))
    dec_t = mulaw_decode_torch(codes_t, bits)
    assert dec_t.dtype == torch.float32
    np.testing.assert_array_equal(dec_t.numpy(), mulaw_decode(codes, bits))


def test_mulaw_roundtrip_error_bound():
    x = np.linspace(-1, 1, 100001)
    y = mulaw_decode(mulaw_encode(x, 8), 8)
    mu = 255
    # the error is at most one bin in the compressed domain: |d x / d x_comp| * (2 / mu)
    slope = np.log1p(mu) / mu * (1 + mu * np.abs(x))
    assert np.all(np.abs(y - x) <= slope * 2 / mu + 1e-6)
    assert np.max(np.abs(y - x)[np.abs(x) < 0.01]) < 5e-4  # fine resolution near silence
    assert np.array_equal(mulaw_encode(np.array([2.0, -3.0]), 8), [255, 0])  # clipped


# ----------------------------------------------------------------------------- tiers


def test_tier_lengths():
    rates = (2000, 8000, 16000)
    x = sine(220, 1.2345, 16000)
    tiers = make_tiers(x, rates)
    n_fine = tier_crop_length(len(x), rates)
    assert n_fine == len(x) // 8 * 8 and n_fine > len(x) - 8
    n0 = n_fine // 8
    for r in rates:
        assert tiers[r].dtype == np.uint8 and tiers[r].shape == (n0 * r // 2000,)
    np.testing.assert_array_equal(tiers[16000], mulaw_encode(x[:n_fine]))
    assert list(tiers) == list(rates)


def test_tiers_derive_from_decoded_fine_tier():
    rates = (4000, 16000)
    x = sine(300, 0.5, 16000)
    tiers = make_tiers(x, rates)
    expected = mulaw_encode(resample(mulaw_decode(mulaw_encode(x)), 16000, 4000))
    np.testing.assert_array_equal(tiers[4000], expected)


def test_tier_alignment_zero_crossings():
    """A slow sine crosses zero at the same times in every tier."""
    rates = (2000, 8000, 16000)
    freq = 5.0  # zero crossings every 0.1 s
    t = np.arange(16000 * 2) / 16000
    x = (0.8 * np.sin(2 * np.pi * freq * (t + 0.0123))).astype(np.float32)
    tiers = make_tiers(x, rates)
    expected = np.arange(1, 20) / (2 * freq) - 0.0123  # seconds
    expected = expected[(expected > 0.05) & (expected < 1.95)]
    for r, codes in tiers.items():
        y = mulaw_decode(codes)
        s = np.flatnonzero(np.signbit(y[:-1]) != np.signbit(y[1:]))  # sample before each crossing
        # interpolate crossing time within the step
        tc = (s + y[s] / (y[s] - y[s + 1])) / r
        tc = tc[(tc > 0.05) & (tc < 1.95)]
        assert len(tc) == len(expected), r
        assert np.max(np.abs(tc - expected)) < 1.0 / 2000, r  # within one coarse sample


def test_make_tiers_rejects_bad_rates():
    with pytest.raises(ValueError, match="multiple"):
        make_tiers(np.zeros(100, np.float32), (3000, 16000))


def test_audio_error_message():
    e = AudioError("/x/a.wav", "silent")
    assert str(e) == "/x/a.wav: silent" and e.path == "/x/a.wav" and e.reason == "silent"
    assert str(AudioError("silent")) == "silent" and AudioError("silent").path is None
