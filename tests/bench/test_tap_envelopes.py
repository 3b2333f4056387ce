"""bench/tap_envelopes.py: the harmonic grid and the taps' prediction gain on a known signal."""

from __future__ import annotations

import numpy as np
import pytest

from tap_envelopes import FPS, Harmonics, prediction_gain


def test_harmonics_sit_in_their_bands_below_nyquist():
    hm = Harmonics(2000)
    f = hm.freq[hm.valid]
    assert f.max() < 0.95 * 1000
    lo, hi = hm.edges[hm.band[hm.valid]], hm.edges[hm.band[hm.valid] + 1]
    assert np.all((lo <= f) & (f < hi))
    assert hm.count.sum() == hm.valid.sum()


def test_taps_of_the_sounding_note_predict_it_far_better_than_a_wrong_note():
    """A 220 Hz tone with harmonics: taps from its own pitch (A3, MIDI 57) predict it with a gain of tens
    of dB; taps from a tritone away do far worse (a margin of 10 dB)."""
    rate, seconds = 2000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    x = sum(np.sin(2 * np.pi * 220.0 * h * t + h) / h for h in range(1, 4))
    hm = Harmonics(rate)
    kernel = hm.kernel(hm.number ** -2.0, 64)
    frames = int(seconds * FPS)

    def gain(pitch):
        v = np.zeros((128, frames))
        v[pitch] = 0.8
        e, s = prediction_gain(x, v, kernel, 64, rate)
        return 10 * np.log10(s / e)

    right, wrong = gain(57), gain(63)
    assert right > 20 and right > wrong + 10, (right, wrong)
    assert prediction_gain(x, np.zeros((128, frames)), kernel, 64, rate) == pytest.approx((0.0, 0.0))
