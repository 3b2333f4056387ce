"""Diagnostics of generated and real audio (pipeline/evaluation/assess.py, ``strata assess``, meta.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpus.audio import load_audio, make_tiers, mulaw_decode, resample, to_mono
from pipeline.corpus.midi import read_midi
from pipeline.evaluation import assess_metrics as am
from pipeline.evaluation.assess import (
    FALLBACK_FLATNESS_THRESHOLD,
    assess_audio,
    assess_job,
    assess_paths,
    calibrate_noise,
    diagnose,
    noise_threshold,
    reference_agreement,
    resynth_group,
    score_group,
    write_calibration,
)
from tests.helpers_data import make_dataset
from tests.helpers_run import make_run, write_midi, write_tone

SR = am.ANALYSIS_RATE
C_MAJOR, F_SHARP_MAJOR = (60, 64, 67), (66, 70, 73)
CHORDS = ((60, 64, 67), (62, 65, 69), (66, 70, 73), (57, 61, 64))  # C, d, F#, A: four different chords
AUGMENTED = ((60, 64, 68), (61, 65, 69), (62, 66, 70), (63, 67, 71))  # disjoint pitch classes covering all 12
# white noise: each power-spectrum bin is exponential, so its spectral flatness (geometric over arithmetic
# mean) is exp(-Euler's gamma), its log power lies 10 gamma / ln 10 dB below the mean with a standard deviation
# of 10 / ln 10 * pi / sqrt(6) dB
WHITE_FLATNESS = float(np.exp(-np.euler_gamma))  # 0.5615
EXP_LOG_BIAS_DB = 10 * np.euler_gamma / np.log(10)  # 2.507
EXP_LOG_SD_DB = 10 / np.log(10) * np.pi / np.sqrt(6)  # 5.570


def tones(pitches, seconds: float) -> np.ndarray:
    """Harmonic tones (fundamental + 2 decaying partials) of the MIDI pitches, float32 at SR."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * h * 440 * 2 ** ((p - 69) / 12) * t) / h for p in pitches for h in (1, 2, 3))
    return (0.9 * x / np.max(np.abs(x))).astype(np.float32)


def sines(pitches, seconds: float) -> np.ndarray:
    """Pure sines (no partials) of the MIDI pitches, float32 at SR: chroma only at their pitch classes."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) for p in pitches)
    return (0.9 * x / np.max(np.abs(x))).astype(np.float32)


def write_wav(path: Path, x: np.ndarray, rate: int = SR) -> Path:
    sf.write(str(path), x, rate, subtype="PCM_16")
    return path


def read(path: Path) -> np.ndarray:
    x, sr = load_audio(path)
    return am.to_analysis_rate(to_mono(x), sr)


def chord_midi(path: Path, chords, seconds: float) -> Path:
    return write_midi(path, [(p, i * seconds, (i + 1) * seconds) for i, c in enumerate(chords) for p in c])


# ----------------------------------------------------------------------------- score agreement


def test_matching_chord_agrees_and_a_wrong_one_does_not(tmp_path):
    midi = read_midi(chord_midi(tmp_path / "c.mid", [C_MAJOR], 2.0))
    right = am.chroma_agreement(read(write_wav(tmp_path / "c.wav", tones(C_MAJOR, 2.0))), midi)
    wrong = am.chroma_agreement(read(write_wav(tmp_path / "fs.wav", tones(F_SHARP_MAJOR, 2.0))), midi)
    assert right["chroma_agreement"] > 0.8
    assert wrong["chroma_agreement"] < 0.3
    assert right["frames"] > 50


def test_shuffled_frames_score_chance_and_a_shift_loses_agreement(tmp_path):
    audio = np.concatenate([tones(c, 0.75) for c in CHORDS])
    notes = read_midi(chord_midi(tmp_path / "seq.mid", CHORDS, 0.75))
    found = am.chroma_agreement(read(write_wav(tmp_path / "seq.wav", audio)), notes)
    assert found["chroma_agreement"] > 0.75
    assert found["chroma_agreement"] - found["chroma_chance"] > 0.3
    late = am.chroma_agreement(read(write_wav(tmp_path / "seq.wav", audio)), notes, offset_seconds=0.75)
    assert late["chroma_agreement"] < found["chroma_agreement"] - 0.3  # the score read one chord late


def test_held_chord_has_no_lift_and_disjoint_chords_a_quarter_chance(tmp_path):
    """Known answers: shuffling the frames of one held chord changes nothing (chance = agreement, lift 0);
    four equally long chords with disjoint pitch classes meet their own chord in a quarter of the shuffled
    frames (chance 1/4, a little more from the leakage between neighbouring semitones)."""
    held = am.chroma_agreement(sines(C_MAJOR, 2.0), read_midi(chord_midi(tmp_path / "c.mid", [C_MAJOR], 2.0)))
    assert held["chroma_agreement"] > 0.95
    assert held["chroma_chance"] == pytest.approx(held["chroma_agreement"], abs=1e-6)
    audio = np.concatenate([sines(c, 1.0) for c in AUGMENTED])
    seq = am.chroma_agreement(audio, read_midi(chord_midi(tmp_path / "aug.mid", AUGMENTED, 1.0)))
    assert seq["chroma_agreement"] > 0.95
    assert 0.25 <= seq["chroma_chance"] < 0.32
    assert seq["frames"] == pytest.approx(4.0 * SR / am.HOP, abs=2)  # every frame of the 4 s has a note


def test_assess_audio_picks_up_the_midi_beside_it(tmp_path):
    write_wav(tmp_path / "piece.wav", sines(C_MAJOR, 2.0))
    chord_midi(tmp_path / "piece.mid", [C_MAJOR], 2.0)
    item = assess_audio(tmp_path / "piece.wav")
    score = item["score"]
    assert score["midi"] == str(tmp_path / "piece.mid")
    assert score["chroma_agreement"] > 0.95 and score["chroma_lift"] == pytest.approx(0.0, abs=1e-6)  # held chord
    assert item["kind"] == "audio" and item["length"]["seconds"] == pytest.approx(2.0)


@pytest.mark.skipif(not shutil.which("fluidsynth"), reason="needs FluidSynth (make system-deps)")
def test_reference_is_a_rendering_of_the_score(tmp_path):
    chord_midi(tmp_path / "piece.mid", [C_MAJOR], 2.0)
    wrong = chord_midi(tmp_path / "other.mid", [F_SHARP_MAJOR], 2.0)
    right, why_not = reference_agreement(str(tmp_path / "piece.mid"), 0)
    assert why_not is None and right > 0.7  # a piano-like rendering of the chord agrees with its score
    assert reference_agreement(str(wrong), 0)[0] > 0.7  # any score agrees with its own rendering


def test_no_fluidsynth_gives_no_reference_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no fluidsynth on the PATH
    reference_agreement.cache_clear()
    midi = chord_midi(tmp_path / "piece.mid", [C_MAJOR], 2.0)
    with caplog.at_level("WARNING"):
        score = score_group(sines(C_MAJOR, 2.0), midi)
    reference_agreement.cache_clear()
    assert score["chroma_reference"] is None
    assert "no reference" in score["warnings"][0] and "fluidsynth" in score["warnings"][0].lower()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == score["warnings"]


# ----------------------------------------------------------------------------- noise


def test_white_noise_is_above_the_threshold_and_a_sine_below():
    rng = np.random.default_rng(0)
    noise = am.noise_summary((0.3 * rng.standard_normal(3 * SR)).astype(np.float32), FALLBACK_FLATNESS_THRESHOLD)
    sine = am.noise_summary(tones([69], 3.0), FALLBACK_FLATNESS_THRESHOLD)
    assert noise["flatness_median"] == pytest.approx(WHITE_FLATNESS, abs=0.01)  # exp(-gamma), see above
    assert noise["noisy_share"] == 1.0 and noise["first_noisy_seconds"] == 0.0
    assert sine["flatness_median"] < FALLBACK_FLATNESS_THRESHOLD / 10
    assert sine["noisy_share"] == 0.0 and sine["first_noisy_seconds"] is None and sine["windows"] == 3


def test_noise_after_music_is_timed_and_silence_is_not_noise():
    rng = np.random.default_rng(1)
    x = np.concatenate([tones(C_MAJOR, 2.0), (0.3 * rng.standard_normal(2 * SR)).astype(np.float32),
                        np.zeros(2 * SR, np.float32)])
    flat = am.window_flatness(x)  # a frame straddling a window edge belongs to the window of its centre
    assert (flat[:2] < FALLBACK_FLATNESS_THRESHOLD).all() and (flat[2:4] > 0.3).all() and np.isnan(flat[5])
    found = am.noise_summary(x, FALLBACK_FLATNESS_THRESHOLD)
    assert found["first_noisy_seconds"] == 2.0 and found["windows"] == 6 and found["silent_windows"] >= 1
    assert 0.4 <= found["noisy_share"] <= 0.6


def test_band_flatness_sees_noise_in_one_band_under_a_tonal_band():
    """Harmonic tones below 1 kHz with band-limited noise at 1-4 kHz: the full band looks tonal, the band does not."""
    import scipy.signal

    rng = np.random.default_rng(2)
    sos = scipy.signal.butter(8, [1000, 4000], btype="bandpass", fs=SR, output="sos")
    hiss = scipy.signal.sosfilt(sos, rng.standard_normal(3 * SR)).astype(np.float32)
    low = tones(C_MAJOR, 3.0)
    x = low + 0.2 * hiss / np.sqrt(np.mean(hiss**2)) * np.sqrt(np.mean(low**2))  # hiss 14 dB under the tones
    full, band = am.window_flatness(x), am.band_window_flatness(x, 1000, 4000)
    assert (full < FALLBACK_FLATNESS_THRESHOLD).all()  # the full band misses it
    assert (band > 0.2).all()
    assert (am.band_window_flatness(low, 1000, 4000) < 0.01).all()  # the tones' own partials in the band


def test_calibration_from_a_dataset_is_stored_in_the_run(tmp_path):
    tonal = calibrate_noise(make_dataset(tmp_path / "tonal", kind="periodic"))
    noisy = calibrate_noise(make_dataset(tmp_path / "noisy", kind="noise"))
    assert tonal["tracks"] == 4 and tonal["split"] == "train" and tonal["windows"] == 8
    assert tonal["flatness_threshold"] < 0.01 < 0.3 < noisy["flatness_threshold"]
    run = tmp_path / "run"
    run.mkdir()
    assert noise_threshold(run) == (FALLBACK_FLATNESS_THRESHOLD, "fallback")
    stored = write_calibration(tmp_path / "tonal", run)
    assert noise_threshold(run) == (stored["flatness_threshold"], str(run / "diagnostics_calibration.json"))


@pytest.mark.parametrize("content", ["{not json", '{"percentile": 99}', '{"flatness_threshold": "high"}'])
def test_corrupt_calibration_falls_back_with_one_warning(tmp_path, content, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "diagnostics_calibration.json").write_text(content)
    with caplog.at_level("WARNING"):
        value, source = noise_threshold(run)
    assert value == FALLBACK_FLATNESS_THRESHOLD and source.startswith("fallback: ")
    assert str(run / "diagnostics_calibration.json") in source  # the reason names the file
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == source[len("fallback: "):] and "\n" not in line
    item = diagnose(sines(C_MAJOR, 1.0), SR, run_dir=run)  # the JSON records it too
    assert item["noise"]["threshold_source"] == source


# ----------------------------------------------------------------------------- tiers and spectra


def test_tier_consistency_of_a_file_with_its_own_resampling():
    rng = np.random.default_rng(2)
    fine = (tones(C_MAJOR, 1.0) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    own = am.tier_consistency(fine, SR, {2000: resample(fine, SR, 2000), 8000: resample(fine, SR, 8000)})
    assert own == {"2000": am.SNR_CAP_DB, "8000": am.SNR_CAP_DB}
    coded = {r: mulaw_decode(c) for r, c in make_tiers(fine, (2000, SR)).items()}
    assert 25 < am.tier_consistency(coded[SR], SR, {2000: coded[2000]})["2000"] < am.SNR_CAP_DB
    noise = (0.3 * rng.standard_normal(2000)).astype(np.float32)
    assert am.tier_consistency(fine, SR, {2000: noise})["2000"] < 0
    coarse = resample(fine, SR, 2000)
    error = np.sqrt(np.mean(coarse ** 2) / 100) * rng.standard_normal(coarse.shape)  # 1% of its power
    found = am.tier_consistency(fine, SR, {2000: (coarse + error).astype(np.float32)})["2000"]
    assert found == pytest.approx(20, abs=0.3)


def test_lsd_of_a_gain_and_of_a_missing_band_are_known():
    """Known answers: half the amplitude is 20 log10 2 dB in every bin; a band that upsampling leaves empty
    sits at the floor, ``EXP_LOG_BIAS_DB`` below white noise's mean bin power (spread ``EXP_LOG_SD_DB``)."""
    rng = np.random.default_rng(4)
    sigma = 0.1
    real = (sigma * rng.standard_normal(3 * SR)).astype(np.float32)
    found = resynth_group(0.5 * real, real, resample(real, SR, 1000), 1000, SR)
    assert found["lsd_db"] == pytest.approx(20 * np.log10(2), abs=0.01)
    assert found["lsd_high_db"] == pytest.approx(20 * np.log10(2), abs=0.01) and found["high_band_hz"] == 500
    window = np.hanning(am.N_FFT)
    mean_bin_db = 10 * np.log10(sigma ** 2 * (window ** 2).sum() / (window.sum() / 2) ** 2)
    gap = mean_bin_db - EXP_LOG_BIAS_DB - 10 * np.log10(am.LSD_FLOOR)  # mean log distance to the floor
    assert found["lsd_upsampled_high_db"] == pytest.approx(np.hypot(gap, EXP_LOG_SD_DB), abs=0.5)  # 52.5 dB
    high_share = 1 - 500 / (SR / 2)  # bins at or above 500 Hz; below it upsampling keeps the noise
    assert found["lsd_upsampled_db"] == pytest.approx(np.hypot(gap, EXP_LOG_SD_DB) * np.sqrt(high_share), abs=0.5)


def test_lsd_is_zero_to_itself_and_upsampling_scores_worse():
    rng = np.random.default_rng(3)
    real = (tones(CHORDS[0], 1.0) * 0.7 + 0.02 * rng.standard_normal(SR)).astype(np.float32)
    upsampled = resample(resample(real, SR, 2000), 2000, SR)
    assert am.lsd_db(real, real, SR) == 0.0
    assert am.lsd_db(real, upsampled, SR) > 10
    assert am.lsd_db(real, upsampled, SR, min_hz=1000) > am.lsd_db(real, upsampled, SR)  # loss is above 1 kHz


# ----------------------------------------------------------------------------- command line


def test_assess_command_writes_json_and_skips_bad_paths(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    write_wav(tmp_path / "piece.wav", tones(C_MAJOR, 2.0))
    chord_midi(tmp_path / "piece.mid", [C_MAJOR], 2.0)
    out = tmp_path / "diag.json"
    res = CliRunner().invoke(app, ["assess", str(tmp_path / "piece.wav"), str(tmp_path / "missing.wav"),
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (item,) = data["assessed"]
    direct = assess_audio(tmp_path / "piece.wav")  # the command writes what the library measures
    for group in ("score", "noise", "tiers", "resynth", "length"):
        assert item[group] == direct[group], group  # same process, same numbers (JSON keeps floats exactly)
    assert item["noise"]["threshold_source"] == "fallback"
    assert item["noise"]["flatness_median"] < FALLBACK_FLATNESS_THRESHOLD / 10  # harmonic tones, not noise
    assert data["skipped"][0]["path"] == str(tmp_path / "missing.wav")
    assert data["summary"]["items"] == 1 and data["summary"]["chroma_agreement"] > 0.8
    bad = CliRunner().invoke(app, ["assess", str(tmp_path / "missing.wav")])
    assert bad.exit_code == 2 and "nothing could be assessed" in bad.output


# ----------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("assess"))


def test_resynth_job_writes_diagnostics(run, tmp_path):
    from pipeline.generation.generate import generate
    from pipeline.generation.plan import load_prompt_tiers
    from pipeline.run import load_run

    tone = write_tone(tmp_path / "real.wav", seconds=0.5)
    (job,) = generate(run, tmp_path / "out", resynth=tone, progress=False)
    meta = json.loads((job / "meta.json").read_text())
    d = meta["diagnostics"]
    assert "error" not in d, d
    real = load_prompt_tiers(tone, load_run(run).cfg, [1000, 2000])
    coarse, _ = sf.read(str(job / "tier_1000.wav"), dtype="float32")
    assert np.abs(coarse - mulaw_decode(real[1000])).max() < 1e-4  # stage 0 skipped: the real tier
    assert meta["timings"]["stages"][0]["skipped"] == "resynth"
    assert d["resynth"]["source"] == str(tone) and d["resynth"]["high_band_hz"] == 500
    # measured against the real audio and its coarse tier (read here from the files, not from the job)
    fine, _ = sf.read(str(job / "audio.wav"), dtype="float32")
    want = resynth_group(fine, mulaw_decode(real[2000]), mulaw_decode(real[1000]), 1000, 2000)
    for key in ("lsd_db", "lsd_high_db", "lsd_upsampled_db", "lsd_upsampled_high_db"):
        assert d["resynth"][key] == pytest.approx(want[key], abs=0.05), key  # 16-bit files
    assert d["resynth"]["lsd_db"] > 0
    assert d["length"] == {"seconds": meta["seconds"], "length_decided_by_model": False, "ended_by_end_class": False}
    again = assess_job(job)  # from the files alone: the same tier SNR and noise (16-bit rounding apart)
    assert again["tiers"]["snr_db"]["1000"] == pytest.approx(d["tiers"]["snr_db"]["1000"], abs=0.01)
    assert again["noise"]["flatness_median"] == pytest.approx(d["noise"]["flatness_median"], abs=1e-3)


def test_midi_job_reports_score_agreement_and_markdown(run, tmp_path):
    from flows.generate import job_markdown
    from pipeline.generation.generate import generate

    midi = write_midi(tmp_path / "m.mid", notes=((60, 0.0, 0.3), (64, 0.1, 0.3)))
    (job,) = generate(run, tmp_path / "out", midi=midi, progress=False)
    meta = json.loads((job / "meta.json").read_text())
    score = meta["diagnostics"]["score"]
    assert score["midi"] == str(midi) and score["offset_seconds"] == 0.0
    fine, _ = sf.read(str(job / "audio.wav"), dtype="float32")  # the job's audio measured here, from its file
    assert score == pytest.approx(score_group(am.to_analysis_rate(fine, 2000), midi), abs=1e-4)  # 16-bit file
    text = job_markdown(job, meta)
    assert "## Diagnostics" in text and "chroma lift" in text and "tier SNR at 1000 Hz" in text
    folder = assess_paths([tmp_path / "out"])  # a folder of jobs
    assert [i["path"] for i in folder["assessed"]] == [str(job)]


def test_resynth_and_prompt_together_are_refused(run, tmp_path):
    from pipeline.errors import ParameterError
    from pipeline.generation.generate import generate

    tone = write_tone(tmp_path / "real.wav")
    with pytest.raises(ParameterError, match="not both"):
        generate(run, tmp_path / "out", prompt=tone, resynth=tone, progress=False)
