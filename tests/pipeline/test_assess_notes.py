"""Band levels and note F1 in ``strata assess`` (issue 17 items 1-2)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpus.audio import resample
from pipeline.corpus.midi import render_midi
from pipeline.evaluation import assess_metrics as am
from pipeline.evaluation.assess import assess_audio, item_line, summarise, transcription_group
from tests.helpers_run import write_midi
from tests.pipeline.test_transcribe import MELODY

SR = am.ANALYSIS_RATE
needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


def sines(parts, seconds: float) -> np.ndarray:
    """Sum of (frequency Hz, amplitude) sines at SR."""
    t = np.arange(int(seconds * SR)) / SR
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in parts).astype(np.float32)


def test_band_levels_of_known_sines():
    x = sines([(500, 1.0), (1500, 0.1), (3000, 0.01), (6000, 0.3)], 3.0)
    levels = am.band_levels(x, SR)
    assert list(levels) == ["1-2k", "2-4k", "4-8k"]
    for name, want in (("1-2k", -20.0), ("2-4k", -40.0), ("4-8k", 20 * np.log10(0.3))):
        assert levels[name] == pytest.approx(want, abs=0.5), (name, levels)


def test_band_levels_median_over_windows_and_silence():
    bright = sines([(500, 1.0), (1500, 1.0)], 3.0)  # 1-2k at 0 dB for 3 windows
    dull = sines([(500, 1.0), (1500, 0.01)], 2.0)  # -40 dB for 2 windows
    gap = np.zeros(3 * SR, np.float32)  # silent windows are left out
    levels = am.band_levels(np.concatenate([bright, gap, dull]), SR)
    assert levels["1-2k"] == pytest.approx(0.0, abs=0.5)
    assert levels["4-8k"] == am.BAND_FLOOR_DB  # no power there at all
    assert am.band_levels(np.zeros(SR), SR) == {"1-2k": None, "2-4k": None, "4-8k": None}
    # another rate gives the same levels (resampled to the analysis rate first)
    at_44k = am.band_levels(resample(sines([(500, 1.0), (3000, 0.1)], 2.0), SR, 44100), 44100)
    assert at_44k["2-4k"] == pytest.approx(-20.0, abs=0.5)


@needs_fluidsynth
def test_assess_reports_note_f1_against_the_midi_and_its_rendering(tmp_path):
    mid = write_midi(tmp_path / "melody.mid", notes=MELODY)
    wav = render_midi(mid, tmp_path / "melody.wav", sr=SR)
    item = assess_audio(wav)  # the .mid beside it is its score
    notes = item["transcription"]
    assert notes["notes"] == len(MELODY)
    assert notes["f1"] >= 0.8 and notes["reference_f1"] >= 0.8, notes  # the audio is a plain rendering
    assert notes["pitch_class_f1"] >= notes["f1"] - 1e-9
    assert item["bands"]["1-2k"] is not None and "note F1" in item_line(item) and "bands" in item_line(item)
    for name, level in item["bands"].items():  # the audio is the plain rendering
        assert item["bands_reference"][name] == pytest.approx(level, abs=1.0), (name, item)
    summary = summarise([item])
    assert summary["note_f1"] == notes["f1"] and summary["band_db_4-8k"] == item["bands"]["4-8k"]
    # the same MIDI against the melody a fifth higher: onsets right, pitches wrong
    shifted = write_midi(tmp_path / "fifth.mid", notes=[(p + 7, a, b) for p, a, b in MELODY])
    wrong = transcription_group(sf.read(str(wav), dtype="float32")[0], shifted)
    assert wrong["f1"] <= 0.2 and wrong["reference_f1"] >= 0.8, wrong
    # an offset: MIDI time 0 at 1.0 s of the audio (a continuation after a prompt)
    late = transcription_group(np.concatenate([np.zeros(SR, np.float32), sf.read(str(wav), dtype="float32")[0]]),
                               mid, offset_seconds=1.0)
    assert late["f1"] >= 0.8, late
