"""bench/fine_sampling.py: how a setting is read, and how pieces are scored against their references."""

from __future__ import annotations

import numpy as np
import pytest

from fine_sampling import (
    change_bursts_db,
    mean_abs_db,
    noisy_windows,
    opening_db,
    parse_setting,
    summary,
    tail_bands_db,
)

RUNS = {"score_guidance": None, "guidance": None, "stage_guidance": None, "guidance_twin": None,
        "steady_scale": None, "preroll_seconds": None,
        "score_share": None, "scale_anchor": None, "scale_clip": None, "share_power": None,
        "stage_top_p": None, "scale_floor": None, "adapt_floor": None, "tail_floor": None}  # the run's


def test_parse_setting_keeps_the_runs_values_for_a_dash():
    s = parse_setting("t1:1,0.8:0.3")
    assert s == {"name": "t1", "stage_temperature": (1.0, 1.0, 0.8), "tier_prior": 0.3, **RUNS}  # stage 0 at 1
    assert parse_setting("run:-:-") == {"name": "run", "stage_temperature": None, "tier_prior": None, **RUNS}
    assert parse_setting("t0:0.8,0.4,0.6:-")["stage_temperature"] == (0.8, 0.4, 0.6)  # three: stage 0's too


def test_parse_setting_reads_the_score_tiers_and_the_stages_guidance():
    assert parse_setting("w1:-:-:1") == {"name": "w1", "stage_temperature": None, "tier_prior": None,
                                         "score_guidance": 1.0, "guidance": None, "stage_guidance": None,
                                         "guidance_twin": None, "steady_scale": None, "preroll_seconds": None,
                                         "score_share": None, "scale_anchor": None, "scale_clip": None,
                                         "share_power": None, "stage_top_p": None, "scale_floor": None,
                                         "adapt_floor": None, "tail_floor": None}
    g = parse_setting("g:-:-:-:2")
    assert (g["score_guidance"], g["guidance"], g["stage_guidance"]) == (None, 2.0, None)  # every stage at 2
    g = parse_setting("s0:-:-:1:2,0,0")  # stage 0 alone: the largest as the guidance, each stage's share of it
    assert (g["guidance"], g["stage_guidance"]) == (2.0, (1.0, 0.0, 0.0))
    assert parse_setting("gg:-:-:1:2:no_genre")["guidance_twin"] == "no_genre"  # the twin drops the genre alone
    assert parse_setting("s:-:-:-:-:-:steady")["steady_scale"] is True
    assert parse_setting("s:-:-:-:-:-:1,0,0")["steady_scale"] == (True, False, False)  # stage 0 alone
    assert parse_setting("p:-:-:-:-:-:-:0.25")["preroll_seconds"] == 0.25
    assert parse_setting("s:-:-:-:-:-:-:-:0,1")["score_share"] == (0.0, 1.0)  # stage 1's share fixed
    assert parse_setting("a:-:-:-:-:-:-:-:-:0,1,0.5")["scale_anchor"] == (0.0, 1.0, 0.5)  # anchored stages 1, 2
    assert parse_setting("c:-:-:-:-:-:-:-:-:-:0,4")["scale_clip"] == (0.0, 4.0)
    assert parse_setting("p:-:-:-:-:-:-:-:-:-:-:1,0.1")["share_power"] == (1.0, 0.1)
    assert parse_setting("f:-:-:-:-:-:-:-:-:-:-:-:-:0.01")["scale_floor"] == (0.01,)  # stage 0's floor at sampling
    assert parse_setting("n:-:-:-:-:-:-:-:-:-:-:-:0.9")["stage_top_p"] == (0.9,)  # stage 0's nucleus alone
    assert parse_setting("a:-:-:-:-:-:-:-:-:-:-:-:-:-:0,0,1e-4")["adapt_floor"] == (0.0, 0.0, 1e-4)  # stage 2's
    assert parse_setting("t:-:-:-:-:-:-:-:-:-:-:-:-:-:-:1e-4,1e-4,1e-5")["tail_floor"] == (1e-4, 1e-4, 1e-5)


@pytest.mark.parametrize("bad", ["t1:1,1", "x:a,b:0.1", ":1,1:0.1", "x:0,1:0.1", "x:1,1:-1", "x:-:-:-1",
                                 "x:-:-:1:1,-1", "x:-:-:1:1:1", "x:-:-:w",
                                 "x:-:-:1:1:roll", "x:-:-:1:1:no_genre:2", "x:-:-:1:1:-:1,yes",
                                 "x:-:-:-:-:-:steady:1:2:3:4:5:6",
                                 "x:-:-:-:-:-:-:w", "x:1:-", "x:1,1,1,1:-", "x:-:-:-:-:-:-:-:-:-:-:-:1.5",
                                 "x:-:-:-:-:-:-:-:-:-:-:-:0,1", "x:-:-:-:-:-:-:-:-:-:-:-:-:1",
                                 "x:-:-:-:-:-:-:-:-:-:-:-:-:-:1", "x:-:-:-:-:-:-:-:-:-:-:-:-:-:-:1",
                                 "x:-:-:-:-:-:-:-:-:-:-:-:-:0.01:0:0:0"])
def test_parse_setting_refuses_malformed_text(bad):
    with pytest.raises(SystemExit, match="--setting"):
        parse_setting(bad)


def test_band_error_is_the_mean_absolute_difference_over_the_known_bands():
    assert mean_abs_db({"1-2k": -10.0, "2-4k": -20.0, "4-8k": None}, {"1-2k": -4.0, "2-4k": -24.0, "4-8k": -30.0}) \
        == pytest.approx(5.0)
    assert mean_abs_db({"1-2k": None}, {"1-2k": -4.0}) is None


def _piece(name, noisy, snr, level, f1=None, high=0.0):
    row = {"name": name, "noisy_share": noisy, "tier_snr_db": {"2000": snr, "8000": 30.0},
           "bands_db": {"1-2k": -10.0}, "band_error_db": 3.0, "level_re_real_db": level,
           "opening_db": [-20.0, -5.0, 0.0], "first_window_noisy": noisy > 0, "high_band_noisy_share": high}
    if f1 is not None:
        row.update(note_f1=f1, rendering_note_f1=0.5)
    return row


def test_summary_counts_pieces_by_their_worst_window_tier_and_level():
    rows = [_piece("midi-a", 0.0, 25.0, -2.0, 0.4), _piece("genre-a-1", 0.125, 12.0, -12.0),
            _piece("genre-a-2", 0.0, 22.0, 3.0, high=0.5)]
    s = summary(rows, {"accuracy": 0.5})
    assert s["midi"]["pieces"] == 1 and s["midi"]["note_f1_mean"] == pytest.approx(0.4)
    g = s["genre"]
    assert g["pieces"] == 2 and g["pieces_with_noise"] == 1 and g["pieces_95pct_windows_clean"] == 1
    assert g["tier_snr_db_min"] == 12.0 and g["pieces_all_tiers_snr_20db"] == 1
    assert g["pieces_level_within_10db"] == 1 and g["pieces_first_window_noisy"] == 1
    assert g["opening_db_median"] == [-20.0, -5.0, 0.0]
    assert g["pieces_95pct_high_band_clean"] == 1 and g["high_band_noisy_share_mean"] == pytest.approx(0.25)
    assert s["genre_recognised"] == {"accuracy": 0.5} and "resynth" not in s
    s = summary(rows + [_piece("resynth-a", 0.0, 21.0, -1.0, 0.3)], {"accuracy": 0.5})
    assert s["resynth"]["pieces"] == 1 and s["resynth"]["note_f1_mean"] == pytest.approx(0.3)
    assert s["midi"]["pieces"] == 1 and s["genre"]["pieces"] == 2  # re-syntheses are counted apart
    assert "unconditional" not in s
    s = summary(rows + [_piece("uncond-1", 0.25, 15.0, -11.0)], {"accuracy": 0.5})
    u = s["unconditional"]  # pieces with no prompt: counted apart, not among the genre pieces
    assert u["pieces"] == 1 and u["pieces_95pct_windows_clean"] == 0 and u["pieces_level_within_10db"] == 0
    assert s["genre"]["pieces"] == 2


def test_opening_reads_a_slow_start_against_the_settled_level():
    sr = 1000
    x = np.ones(2 * sr)
    x[:150] = 0.1  # the first 150 ms 20 dB down
    assert opening_db(x, sr) == [pytest.approx(-20.0), pytest.approx(-20.0), pytest.approx(0.0)]


def test_change_bursts_read_the_bands_after_note_changes_against_the_calm_frames():
    """Broadband bursts of 20 ms at each note onset and end stand out of a steady tone with a faint noise floor
    (by > 15 dB); without them the ratio is near 0 dB; no notes: None."""
    from types import SimpleNamespace

    sr = 16000
    t = np.arange(4 * sr) / sr
    rng = np.random.default_rng(0)
    steady = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    notes = [SimpleNamespace(start=1.0, end=2.0), SimpleNamespace(start=2.5, end=3.5)]
    plain = change_bursts_db(steady, sr, notes)
    bursts = steady.copy()
    for c in (1.0, 2.0, 2.5, 3.5):
        bursts[int(c * sr):int(c * sr) + 320] += 0.2 * rng.standard_normal(320)
    burst = change_bursts_db(bursts, sr, notes)
    assert set(plain) == set(burst) == {"1-4k", "4-8k"}
    assert all(abs(v) < 1.5 for v in plain.values())
    assert all(v > 15 for v in burst.values())
    assert change_bursts_db(steady, sr, []) == {"1-4k": None, "4-8k": None}


def test_coarse_silence_counts_the_seconds_where_the_score_sounds_and_stage_0_does_not(tmp_path):
    """The silence trap hides under the fine stages' noise in the finished audio: read it on the coarse tier's
    file, only in the 1 s windows where the score has a sounding note."""
    import mido
    import soundfile as sf

    from fine_sampling import coarse_silent_share

    rate = 2000
    t = np.arange(4 * rate) / rate
    tier = 0.3 * np.sin(2 * np.pi * 220 * t)
    tier[2 * rate:] *= 1e-4  # seconds 2-4: -90 dBFS
    sf.write(tmp_path / "tier_2000.wav", tier, rate, subtype="PCM_16")
    sf.write(tmp_path / "tier_8000.wav", np.repeat(tier, 4) + 0.1, 4 * rate, subtype="PCM_16")  # a loud finer tier
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks a second
    track = mido.MidiTrack()
    track += [mido.Message("note_on", note=57, velocity=80, time=0), mido.Message("note_off", note=57, time=3 * 960)]
    mid.tracks.append(track)
    mid.save(tmp_path / "score.mid")
    # windows 0-2 sound (the note ends at 3 s), window 3 has no note: 1 silent of 3 sounding windows
    assert coarse_silent_share(tmp_path, tmp_path / "score.mid") == pytest.approx(1 / 3, abs=1e-3)
    assert coarse_silent_share(tmp_path, tmp_path / "missing.mid") is None


def test_tail_bands_read_each_bands_level_after_the_last_note():
    """A 440 Hz tone at -43 dBFS over white noise at -60 dBFS after the score's last note (0.9 s): 0-1 kHz holds the
    tone, 4-8 kHz half the noise's power (-63 dBFS), within 0.5 dB; no tail under 0.2 s, no notes: None."""
    sr = 16000
    t = np.arange(2 * sr) / sr
    x = 0.1 * np.sin(2 * np.pi * 440 * t)
    x[sr:] = 0.01 * np.sin(2 * np.pi * 440 * t[sr:]) + 0.001 * np.random.default_rng(0).standard_normal(sr)
    note = type("Note", (), {"start": 0.0, "end": 0.9})
    got = tail_bands_db(x, sr, [note])
    assert got["0-1k"] == pytest.approx(20 * np.log10(0.01 / np.sqrt(2)), abs=0.5)
    assert got["4-8k"] == pytest.approx(20 * np.log10(0.001 * np.sqrt(0.5)), abs=0.5)
    late = type("Note", (), {"start": 0.0, "end": 1.85})
    assert tail_bands_db(x, sr, [late]) is None and tail_bands_db(x, sr, []) is None


def test_noisy_windows_name_the_seconds_of_noise():
    """Three seconds at 16 kHz: a tone, white noise, a tone: only the second window is above a flatness of 0.1."""
    sr = 16000
    t = np.arange(3 * sr) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    x[sr:2 * sr] = 0.1 * np.random.default_rng(0).standard_normal(sr)
    assert noisy_windows(x, sr, 0.1) == [1]
