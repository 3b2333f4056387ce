"""pipeline/evaluation/music_metrics.py on signals whose answers are known without the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import music_metrics as mm

SR = 16000


def tone(freq: float, seconds: float, amp: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def chord(midis, seconds: float = 2.0, harmonics: int = 4) -> np.ndarray:
    """Harmonic tones (1/h amplitudes) of the MIDI pitches, summed and scaled to peak 0.5."""
    y = sum(tone(440.0 * 2 ** ((m - 69) / 12) * h, seconds, 1.0 / h) for m in midis for h in range(1, harmonics + 1))
    return 0.5 * y / np.abs(y).max()


# ----------------------------------------------------------------------------- band levels


def test_white_noise_band_levels_follow_the_bandwidth():
    # flat spectrum: a band's power is proportional to its width -> 1/1, 2/1, 4/1 of the 0-1 kHz band
    y = np.random.default_rng(0).normal(0, 0.1, 10 * SR)
    lv = mm.band_levels(y, SR)
    assert lv["windows"] == 10
    assert lv["1-2 kHz"] == pytest.approx(0.0, abs=0.3)
    assert lv["2-4 kHz"] == pytest.approx(10 * np.log10(2), abs=0.3)
    assert lv["4-8 kHz"] == pytest.approx(10 * np.log10(4), abs=0.3)


def test_two_sines_give_their_amplitude_ratio():
    # 500 Hz at amplitude 1 and 3 kHz at 0.1: the 2-4 kHz band sits 20 dB under the 0-1 kHz band
    y = tone(500, 3) + tone(3000, 3, 0.1)
    lv = mm.band_levels(y, SR)
    assert lv["2-4 kHz"] == pytest.approx(-20.0, abs=0.2)
    assert lv["1-2 kHz"] < -60 and lv["4-8 kHz"] < -60


def test_bands_above_nyquist_and_silence_are_none():
    lv = mm.band_levels(tone(500, 2, sr=8000) + tone(1500, 2, 0.5, sr=8000), 8000)
    assert lv["4-8 kHz"] is None
    assert lv["1-2 kHz"] == pytest.approx(20 * np.log10(0.5), abs=0.2)
    quiet = mm.band_levels(np.zeros(2 * SR), SR)
    assert quiet["windows"] == 0 and quiet["1-2 kHz"] is None


def test_upsampled_coarse_tier_has_nothing_above_its_nyquist():
    from pipeline.corpus.audio import resample

    coarse = np.random.default_rng(1).normal(0, 0.1, 4 * 2000).astype(np.float32)  # 2 kHz: nothing above 1 kHz
    lv = mm.band_levels(resample(coarse, 2000, SR), SR)
    assert all(lv[b] < -50 for b in ("1-2 kHz", "2-4 kHz", "4-8 kHz"))


def test_level_differences_and_error():
    a = {"1-2 kHz": -10.0, "2-4 kHz": -20.0, "4-8 kHz": None}
    b = {"1-2 kHz": -12.0, "2-4 kHz": -15.0, "4-8 kHz": -30.0}
    assert mm.level_differences(a, b) == {"1-2 kHz": 2.0, "2-4 kHz": -5.0, "4-8 kHz": None}
    assert mm.mean_abs_level_error(a, b) == pytest.approx(3.5, abs=1e-12)


# ----------------------------------------------------------------------------- harmony


def test_key_of_a_rotated_profile_is_its_tonic():
    # a profile equal to A minor's Krumhansl-Kessler profile correlates 1 with it
    k = mm.key_correlations(np.roll(mm.KK_MINOR, 9))
    assert k[12 + 9] == pytest.approx(1.0, abs=1e-12)
    assert mm.estimate_key(np.roll(mm.KK_MAJOR, 7)) == "G major"
    assert mm.estimate_key(np.ones(12)) is None


def test_mean_chroma_of_a_triad_peaks_at_its_pitch_classes():
    c = mm.mean_chroma(chord([60, 64, 67]), SR)  # C E G
    assert set(np.argsort(c)[-3:]) == {0, 4, 7}
    assert c.sum() == pytest.approx(1.0, abs=1e-9)


def test_same_chord_agrees_and_a_distant_chord_does_not():
    c_major = chord([60, 64, 67])
    same = mm.harmony_similarity(c_major, chord([48, 52, 55, 72], harmonics=2), SR)  # other voicing
    far = mm.harmony_similarity(c_major, chord([66, 70, 73]), SR)  # F# A# C#: no shared pitch class
    assert same["chroma_cosine"] > 0.9 and same["same_key"]
    assert far["chroma_cosine"] < same["chroma_cosine"] - 0.3 and not far["same_key"]
    assert far["key_profile_correlation"] < same["key_profile_correlation"]


# ----------------------------------------------------------------------------- ranking, shares, clips


def test_roc_auc_on_hand_counted_pairs():
    # pairs: 0.9 > 0.5, 0.9 > 0.1, 0.4 < 0.5, 0.4 > 0.1 -> 3 of 4
    assert mm.roc_auc([0.9, 0.4], [0.5, 0.1]) == pytest.approx(0.75, abs=1e-12)
    assert mm.roc_auc([1.0], [1.0]) == pytest.approx(0.5, abs=1e-12)
    assert mm.roc_auc([0.0, 0.1], [0.5]) == pytest.approx(0.0, abs=1e-12)
    assert mm.roc_auc([], [1.0]) is None


def test_roc_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    pos, neg = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 60).round(1)  # rounding makes ties
    expect = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
    assert mm.roc_auc(pos, neg) == pytest.approx(expect, abs=1e-12)


def test_share_of_reference():
    assert mm.share_of_reference(0.6, 1.0, 0.2) == pytest.approx(0.5, abs=1e-12)
    assert mm.share_of_reference(0.1, 1.0, 0.2) == pytest.approx(-0.125, abs=1e-12)
    assert mm.share_of_reference(0.6, 0.2, 0.2) is None  # a reference at chance: no share
    assert mm.share_of_reference(None, 1.0, 0.2) is None


def test_clips_cut_whole_spans():
    y = np.arange(1000)
    cut = mm.clips(y, 100, 3.0)
    assert [c[0] for c in cut] == [0, 300, 600] and all(len(c) == 300 for c in cut)
    assert [c[0] for c in mm.clips(y, 100, 3.0, most=2)] == [0, 600]


# ----------------------------------------------------------------------------- genre recognition


def _genre_clips(rng, n: int):
    """Two made-up genres: low harmonic tones, and noise high-passed above 2 kHz."""
    from scipy.signal import butter, sosfilt

    tones = [chord([int(rng.integers(40, 52))], seconds=1.0) for _ in range(n)]
    sos = butter(4, 2000, "highpass", fs=SR, output="sos")
    hiss = [0.3 * sosfilt(sos, rng.normal(0, 1, SR)) for _ in range(n)]
    return tones + hiss, [0] * n + [1] * n


def test_genre_classifier_separates_distinct_sounds_and_fails_on_shuffled_labels():
    rng = np.random.default_rng(3)
    train, y_train = _genre_clips(rng, 6)
    test, y_test = _genre_clips(rng, 4)
    x_train = np.stack([mm.clip_features(c, SR) for c in train])
    x_test = np.stack([mm.clip_features(c, SR) for c in test])
    assert x_train.shape == (12, 2 * mm.N_MFCC + 12 + 4 + 1 + 3)
    model = mm.fit_genre_classifier(x_train, y_train)
    assert mm.accuracy(model, x_test, y_test)["accuracy"] == pytest.approx(1.0, abs=1e-12)
    # every test label flipped: the same model is then always wrong
    assert mm.accuracy(model, x_test, [1 - v for v in y_test])["accuracy"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="two or more"):
        mm.fit_genre_classifier(x_train[:6], y_train[:6])


def test_note_features_tell_a_chorale_from_a_melody_whatever_the_timbre():
    from pipeline.corpus.midi import Note
    from pipeline.evaluation.music_metrics import NOTE_FEATURES, note_features

    melody = [Note(60 + (i * 2) % 12, i * 0.25, i * 0.25 + 0.2, 80, 0, 0, False) for i in range(16)]  # 4 onsets/s
    chords = [Note(p, t, t + 1.0, 80, 0, 0, False) for t in (0.0, 1.0, 2.0, 3.0) for p in (48, 55, 64, 72)]
    m, c = note_features(melody, 4.0), note_features(chords, 4.0)
    assert m.shape == c.shape == (NOTE_FEATURES,)
    assert m[0] == pytest.approx(4.0) and c[0] == pytest.approx(4.0)  # onsets per second: the same
    assert c[1] == pytest.approx(4.0) and m[1] == pytest.approx(0.8)  # mean polyphony: 4 voices against 0.8
    assert c[7] == pytest.approx(1.0) and m[7] == pytest.approx(0.0)  # every onset in a chord, none
    assert m[8:].sum() == pytest.approx(1.0) and c[8:].sum() == pytest.approx(1.0)  # pitch-class histograms
    assert not note_features([], 4.0).any()
