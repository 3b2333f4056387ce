"""pipeline.corpus.midi: tempo map, note rules, piano-roll timing, errors, FluidSynth rendering."""

from __future__ import annotations

import shutil

import mido
import numpy as np
import pytest
import soundfile as sf

from pipeline.corpus.midi import (
    MidiError,
    Note,
    _timed_messages,
    crop_midi,
    find_soundfont,
    is_excerpt,
    midi_duration,
    notes_from_midi,
    piano_roll,
    read_midi,
    render_midi,
    set_program,
    time_to_frame,
)
from pipeline.errors import StrataError
from tests.helpers_run import write_midi

TPB = 480


def _track(events):
    """events: (abs_tick, message) -> MidiTrack with delta times."""
    track, last = mido.MidiTrack(), 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - last))
        last = tick
    return track


def on(ch, note, vel):
    return mido.Message("note_on", channel=ch, note=note, velocity=vel)


def off(ch, note):
    return mido.Message("note_off", channel=ch, note=note, velocity=64)


def tempo_file() -> mido.MidiFile:
    """Type 1, three tempos (one set in a later track).

    ticks    0..960 : 0.5 s/beat -> t = tick / 480 * 0.5          (tick 960 = 1.0 s)
    ticks 960..1920 : 1.0 s/beat -> t = 1.0 + (tick - 960) / 480   (tick 1920 = 3.0 s)
    ticks 1920..    : 0.25 s/beat -> t = 3.0 + (tick - 1920) / 480 * 0.25
    """
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(_track([
        (0, mido.MetaMessage("set_tempo", tempo=500000)),
        (960, mido.MetaMessage("set_tempo", tempo=1000000)),
    ]))
    mid.tracks.append(_track([
        (0, mido.Message("program_change", channel=0, program=24)),
        (0, on(0, 60, 100)), (480, off(0, 60)),  # 0.0 - 0.5 s
        (720, on(0, 62, 80)), (1440, on(0, 62, 0)),  # 0.75 - 2.0 s, velocity-0 note-off
        (1920, on(0, 64, 90)), (2040, off(0, 64)),  # 3.0 - 3.0625 s
        (2160, on(0, 65, 50)), (2400, on(0, 65, 60)),  # overlapping same pitch: FIFO
        (2640, off(0, 65)), (2880, off(0, 65)),  # first 3.125-3.375, second 3.25-3.5
    ]))
    mid.tracks.append(_track([
        (0, mido.Message("control_change", channel=1, control=64, value=127)),
        (240, on(1, 67, 70)), (480, off(1, 67)),  # released at 0.5 s under the pedal
        (1200, mido.Message("control_change", channel=1, control=64, value=0)),  # pedal up 1.5 s
        (1920, mido.MetaMessage("set_tempo", tempo=250000)),  # tempo change in a later track
    ]))
    mid.tracks.append(_track([(960, on(9, 36, 110)), (1000, off(9, 36))]))  # drum at 1.0 s
    return mid


EXPECTED = [  # (pitch, start, end, velocity, program, channel, is_drum)
    (60, 0.0, 0.5, 100, 24, 0, False),
    (67, 0.25, 1.5, 70, 0, 1, False),
    (62, 0.75, 2.0, 80, 24, 0, False),
    (36, 1.0, 1.0 + 40 / 480, 110, 0, 9, True),
    (64, 3.0, 3.0625, 90, 24, 0, False),
    (65, 3.125, 3.375, 50, 24, 0, False),
    (65, 3.25, 3.5, 60, 24, 0, False),
]


def _check_notes(notes):
    assert len(notes) == len(EXPECTED)
    for n, (pitch, start, end, vel, prog, ch, drum) in zip(notes, EXPECTED):
        assert (n.pitch, n.velocity, n.program, n.channel, n.is_drum) == (pitch, vel, prog, ch, drum)
        assert n.start == pytest.approx(start, abs=1e-9) and n.end == pytest.approx(end, abs=1e-9)
        assert n.start_s == n.start and n.end_s == n.end


def test_read_midi_tempo_map_type1(tmp_path):
    tempo_file().save(tmp_path / "t.mid")
    _check_notes(read_midi(tmp_path / "t.mid"))
    assert midi_duration(tmp_path / "t.mid") == pytest.approx(3.5)


def test_read_midi_type0(tmp_path):
    mid1 = tempo_file()
    mid0 = mido.MidiFile(type=0, ticks_per_beat=TPB)
    mid0.tracks.append(mido.merge_tracks(mid1.tracks))
    mid0.save(tmp_path / "t0.mid")
    _check_notes(read_midi(tmp_path / "t0.mid"))


def test_piano_roll_frames():
    notes = notes_from_midi(tempo_file())
    roll = piano_roll(notes, fps=100)
    assert roll.dtype == np.uint8 and roll.shape == (2, 128, 350)  # ends at 3.5 s
    sounding, onset = roll

    def frames(p):
        return np.flatnonzero(sounding[p]).tolist()

    assert frames(60) == list(range(0, 50)) and sounding[60, 0] == 100
    assert frames(62) == list(range(75, 200)) and set(sounding[62, 75:200]) == {80}
    assert frames(67) == list(range(25, 150))  # held by the pedal until 1.5 s
    assert frames(64) == list(range(300, 306))  # 3.0625 s -> frame 306 excluded
    assert frames(65) == list(range(312, 350))
    assert set(sounding[65, 312:325]) == {50} and set(sounding[65, 325:350]) == {60}  # louder wins
    assert not sounding[36].any() and not onset[36].any()  # drums left out by default
    on_frames = {p: np.flatnonzero(onset[p]).tolist() for p in (60, 62, 64, 65, 67)}
    assert on_frames == {60: [0], 62: [75], 64: [300], 65: [312, 325], 67: [25]}
    assert onset[65, 312] == 50 and onset[65, 325] == 60
    assert onset.sum() == sum(v for p, _, _, v, _, _, d in EXPECTED if not d)

    drums = piano_roll(notes, fps=100, include_drums=True)
    assert np.flatnonzero(drums[0, 36]).tolist() == list(range(100, 108))
    assert drums[1, 36, 100] == 110
    assert piano_roll(notes, fps=100, n_frames=1000).shape == (2, 128, 1000)
    assert np.array_equal(piano_roll(notes, fps=100, n_frames=100), roll[:, :, :100])


def test_frame_rule():
    assert time_to_frame(0.29999999999, 100) == 30  # float noise below the boundary counts
    assert time_to_frame(0.0099, 100) == 0 and time_to_frame(0.01, 100) == 1
    short = [Note(60, 0.5, 0.5, 64, 0, 0, False)]  # zero-length note keeps its onset frame
    roll = piano_roll(short, fps=100)
    assert roll.shape == (2, 128, 51) and roll[0, 60, 50] == 64 and roll[1, 60, 50] == 64


def test_pedal_restrike_and_unterminated(tmp_path):
    mid = mido.MidiFile(type=0, ticks_per_beat=TPB)  # 120 bpm default: 480 ticks = 0.5 s
    mid.tracks.append(_track([
        (0, mido.Message("control_change", channel=0, control=64, value=100)),
        (0, on(0, 60, 90)), (240, off(0, 60)),
        (480, on(0, 60, 91)),  # re-strike ends the pedalled copy at 0.5 s
        (720, off(0, 60)),
        (960, mido.Message("control_change", channel=0, control=64, value=10)),  # 1.0 s
        (960, on(0, 72, 50)),  # never released: ends at the last event
        (1440, mido.MetaMessage("end_of_track")),
    ]))
    notes = notes_from_midi(mid)
    got = [(n.pitch, n.start, n.end, n.velocity) for n in notes]
    assert got == [(60, 0.0, 0.5, 90), (60, 0.5, 1.0, 91), (72, 1.0, 1.5, 50)]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_midi_errors(tmp_path):
    good = tmp_path / "good.mid"
    tempo_file().save(good)
    data = good.read_bytes()
    cases = {
        "random.mid": np.random.default_rng(1).bytes(300),
        "header.mid": data[:10],
        "empty.mid": b"",
    }
    for name, blob in cases.items():
        with pytest.raises(MidiError) as info:
            read_midi(_write(tmp_path / name, blob))
        assert str(info.value).startswith(str(tmp_path / name) + ": ")
        assert isinstance(info.value, StrataError) and isinstance(info.value, ValueError)
    with pytest.raises(MidiError, match="file not found"):
        read_midi(tmp_path / "missing.mid")
    silent = mido.MidiFile(type=1, ticks_per_beat=TPB)
    silent.tracks.append(_track([(0, mido.MetaMessage("set_tempo", tempo=400000)),
                                 (0, mido.Message("program_change", channel=0, program=5))]))
    silent.save(tmp_path / "nonotes.mid")
    with pytest.raises(MidiError, match=r"nonotes\.mid: no notes"):
        read_midi(tmp_path / "nonotes.mid")


def test_set_program_rewrites_and_inserts():
    mid = tempo_file()
    notes = notes_from_midi(set_program(mid, 73))
    assert {n.program for n in notes if not n.is_drum} == {73}  # ch 1 had no program change
    assert all(n.program == 0 for n in notes if n.is_drum)
    _check_timing_unchanged(notes)


def _check_timing_unchanged(notes):
    assert [(n.pitch, n.start, n.end) for n in notes] == [
        (n.pitch, n.start, n.end) for n in notes_from_midi(tempo_file())]


def test_crop_midi():
    cropped = notes_from_midi(crop_midi(tempo_file(), 1.0))
    got = [(n.pitch, n.start, n.end) for n in cropped]
    # 60 ends before the cut; 67 (pedalled) and 62 are closed at the cut; the drum starts at it: dropped
    assert got == [(60, 0.0, 0.5), (67, 0.25, 1.0), (62, 0.75, 1.0)]


def test_crop_midi_marks_an_excerpt_only_where_it_cut_notes(tmp_path):
    """A crop that cuts notes off is marked as an excerpt at the cut (the piece goes on); a crop past the
    last note is the whole piece, unmarked.  The marker changes no note."""
    cut, whole = tmp_path / "cut.mid", tmp_path / "whole.mid"
    crop_midi(tempo_file(), 1.0).save(str(cut))
    crop_midi(tempo_file(), 60.0).save(str(whole))
    assert is_excerpt(cut) and not is_excerpt(whole)
    markers = [(t, m) for t, m in _timed_messages(mido.MidiFile(str(cut))) if m.type == "marker"]
    assert len(markers) == 1 and markers[0][0] == pytest.approx(1.0, abs=1e-3)  # at the cut, seconds
    assert [(n.pitch, n.start, n.end) for n in read_midi(cut)] == [(60, 0.0, 0.5), (67, 0.25, 1.0), (62, 0.75, 1.0)]
    _check_notes(read_midi(whole))
    assert not is_excerpt(write_midi(tmp_path / "plain.mid"))


def test_find_soundfont(tmp_path, monkeypatch):
    monkeypatch.delenv("STRATA_SOUNDFONT", raising=False)
    with pytest.raises(MidiError, match="not found"):
        find_soundfont(tmp_path / "nope.sf2")
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"RIFF")
    assert find_soundfont(font) == font
    monkeypatch.setenv("STRATA_SOUNDFONT", str(font))
    assert find_soundfont() == font
    monkeypatch.delenv("STRATA_SOUNDFONT")
    try:
        found = find_soundfont()
    except MidiError as e:
        assert "no soundfont found" in str(e)
    else:
        assert found.suffix in (".sf2", ".sf3") and found.is_file()


needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


def _scale_file(path):
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)  # 120 bpm: a quarter note = 0.5 s
    events = [(0, mido.MetaMessage("set_tempo", tempo=500000))]
    for i, p in enumerate([60, 62, 64, 65, 67, 69]):
        events += [(i * 480, on(0, p, 100)), ((i + 1) * 480 - 10, off(0, p))]
    mid.tracks.append(_track(events))
    mid.save(path)
    return path


@needs_fluidsynth
def test_render_midi_length_and_program(tmp_path):
    src = _scale_file(tmp_path / "scale.mid")
    duration = midi_duration(src)
    assert duration == pytest.approx(3.0 - 10 / 480 * 0.5)
    out = render_midi(src, tmp_path / "out" / "flute.wav", sr=16000, program=73, tail_seconds=1.0)
    assert out == tmp_path / "out" / "flute.wav"
    x, sr = sf.read(out, dtype="float32")
    assert sr == 16000 and x.ndim == 1 and sf.info(out).subtype == "PCM_16"
    assert duration <= len(x) / sr <= duration + 1.0 + 1e-3
    assert np.max(np.abs(x)) == pytest.approx(0.9, abs=1e-3)
    # sound starts at t=0 (aligned with the MIDI), not after a delay
    assert np.max(np.abs(x[: int(0.1 * sr)])) > 0.05
    organ = render_midi(src, tmp_path / "organ.wav", sr=16000, program=19, tail_seconds=1.0)
    y, _ = sf.read(organ, dtype="float32")
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] < 0.5  # a different instrument, not the same audio
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary left behind


@needs_fluidsynth
def test_render_midi_errors(tmp_path):
    bad = _write(tmp_path / "bad.mid", b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(MidiError, match=r"bad\.mid: "):
        render_midi(bad, tmp_path / "bad.wav")
    assert not (tmp_path / "bad.wav").exists()
    with pytest.raises(MidiError, match="soundfont not found"):
        render_midi(_scale_file(tmp_path / "s.mid"), tmp_path / "s.wav", soundfont=tmp_path / "none.sf2")


def test_render_midi_without_fluidsynth(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no fluidsynth on it
    with pytest.raises(MidiError, match="fluidsynth not found"):
        render_midi(_scale_file(tmp_path / "s.mid"), tmp_path / "s.wav")
