"""pipeline/corpus/score_events.py: rolls <-> events <-> MIDI, augmentation, the dataset summary."""

from __future__ import annotations

import json

import mido
import numpy as np
import pytest

from pipeline.corpus import score_events as se
from pipeline.corpus.midi import Note, piano_roll, read_midi
from pipeline.errors import InputError

FPS = 100
# (pitch, start s, end s, velocity): chords, a re-strike of 64 right at its release, a 1.7 s hold
# (two shifts), a 1-frame note, leading silence of 0.25 s, velocities on the bin grid (8 b + 4)
NOTES = [(60, 0.25, 0.75, 100), (64, 0.25, 0.5, 76), (67, 0.25, 0.75, 76), (64, 0.5, 0.9, 100),
         (48, 0.9, 2.6, 52), (72, 1.0, 1.01, 124), (55, 2.61, 2.99, 4), (79, 2.61, 2.8, 68)]


def write_midi(path, notes=NOTES, bpm=100.0, tpb=480):
    """A type-1 MIDI file (tempo track + note track) written by mido."""
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)])
    ticks = lambda s: int(round(s * tpb * bpm / 60))  # noqa: E731
    timed = []
    for p, a, b, v in notes:
        timed += [(ticks(a), 1, mido.Message("note_on", note=p, velocity=v)),
                  (ticks(b), 0, mido.Message("note_off", note=p, velocity=0))]
    track, now = mido.MidiTrack(), 0
    for t, _, msg in sorted(timed, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=t - now))
        now = t
    mid.tracks += [tempo, track]
    mid.save(str(path))
    return path


def test_vocabulary_is_disjoint_and_covers_every_id():
    kinds = [se.is_time_shift, se.is_note_on, se.is_note_off, se.is_velocity]
    for tok in range(se.VOCAB_SIZE):
        n = sum(k(tok) for k in kinds) + (tok in (se.PAD, se.END))
        assert n == 1, (tok, se.token_name(tok))
    assert se.VOCAB_SIZE == 2 + 100 + 128 + 128 + 16
    assert se.shift_steps(se.time_shift(100)) == 100 and se.token_seconds(se.time_shift(37)) == pytest.approx(0.37)
    assert [se.velocity_bin(v) for v in (1, 7, 8, 64, 127)] == [0, 0, 1, 8, 15]


def test_round_trip_of_a_real_midi_files_roll(tmp_path):
    roll = piano_roll(read_midi(write_midi(tmp_path / "a.mid")), fps=FPS)  # (2, 128, F)
    assert roll.shape[2] == 299 and roll[1].sum() > 0
    events = se.roll_to_events(roll, FPS)
    assert events[-1] == se.END and events.count(se.END) == 1
    assert events[0] == se.time_shift(25)  # leading silence kept
    assert se.time_shift(100) in events  # the 1.7 s hold needs more than one shift
    back = se.events_to_roll(events, FPS)
    assert back.dtype == np.uint8 and np.array_equal(back, roll)
    assert se.events_seconds(events) == pytest.approx(roll.shape[2] / FPS, abs=1e-9)
    # a re-strike at the release keeps two onsets of 64, one frame apart from nothing
    assert roll[1, 64, 25] and roll[1, 64, 50] and np.array_equal(back[1, 64], roll[1, 64])


def random_notes(rng: np.random.Generator, n: int = 60, seconds: float = 4.0) -> list[Note]:
    """Random notes on a 10 ms grid, any velocity 1..127, no two of one pitch overlapping."""
    notes: list[Note] = []
    for _ in range(n):
        p, a = int(rng.integers(30, 90)), int(rng.integers(0, int(seconds * 100) - 20)) / 100
        b = a + int(rng.integers(1, 20)) / 100
        if any(m.pitch == p and m.start < b + 0.05 and a < m.end + 0.05 for m in notes):
            continue
        notes.append(Note(p, a, b, int(rng.integers(1, 128)), 0, 0, False))
    return notes


def test_off_grid_velocities_and_coarser_rolls():
    notes = random_notes(np.random.default_rng(0))
    roll = piano_roll(notes, fps=FPS)
    back = se.events_to_roll(se.roll_to_events(roll, FPS), FPS)
    assert np.array_equal(back > 0, roll > 0)  # timing exact
    assert np.abs(back.astype(int) - roll.astype(int)).max() <= 4  # velocity to its bin's middle (+-4)
    for fps in (25, 30, 50):  # every frame maps to whole 10 ms steps and back
        coarse = piano_roll(notes, fps=fps)
        back = se.events_to_roll(se.roll_to_events(coarse, fps), fps)
        assert back.shape == coarse.shape and np.array_equal(back > 0, coarse > 0), fps


def test_decoding_releases_restrikes_and_stops_at_end():
    ev = [se.velocity(12), se.note_on(60), se.time_shift(10), se.note_on(60), se.time_shift(5),
          se.note_on(62), se.END, se.time_shift(50), se.note_on(70)]
    roll = se.events_to_roll(ev, FPS)
    assert roll.shape == (2, 128, 15)  # END at 150 ms; nothing after it
    assert roll[:, 62].sum() == 0  # struck at END: no length
    assert list(np.flatnonzero(roll[1, 60])) == [0, 10] and roll[0, 60].min() == 100
    assert roll[:, 70].sum() == 0
    assert se.events_to_roll(ev, FPS, max_frames=8).shape == (2, 128, 8)
    assert se.events_seconds(ev) == pytest.approx(0.15)
    no_end = se.events_to_roll([se.note_on(40), se.time_shift(3)], FPS)
    assert no_end.shape[2] == 3 and no_end[0, 40, 2] == se.bin_velocity(se.DEFAULT_VELOCITY_BIN)


def test_transpose_and_stretch(tmp_path):
    events = se.roll_to_events(piano_roll(read_midi(write_midi(tmp_path / "a.mid")), fps=FPS), FPS)
    up = se.transpose(events, 5)
    roll, roll_up = se.events_to_roll(events, FPS), se.events_to_roll(up, FPS)
    assert np.array_equal(roll_up[:, 5:], roll[:, :-5])
    assert se.transpose(events, 49) is None and se.transpose(events, -49) is None  # 79 + 49, 48 - 49
    slow = se.stretch_window(events, 1.5)
    assert se.events_seconds(slow) == pytest.approx(1.5 * se.events_seconds(events), abs=0.011)
    r_slow = se.events_to_roll(slow, FPS)
    on_t = lambda r: sorted(zip(*np.nonzero(r[1])), key=lambda x: (x[1], x[0]))  # noqa: E731
    for (p, a), (q, b) in zip(on_t(roll), on_t(r_slow)):
        assert p == q and abs(b - 1.5 * a) <= 1
    fast = se.stretch_window(events, 0.1)  # squeezed: every shift keeps >= 1 step, onsets stay distinct
    assert np.array_equal(se.events_to_roll(fast, FPS)[1].sum(1) > 0, roll[1].sum(1) > 0)
    assert [t for t in fast if not se.is_time_shift(t)] == [t for t in events if not se.is_time_shift(t)]
    back = se.stretch_window(se.stretch_window(events, 2.0), 0.5)  # the same times (a split shift stays split)
    assert np.array_equal(se.events_to_roll(back, FPS), roll)
    assert se.stretch_window(events, 1.0) == events
    with pytest.raises(ValueError, match="stretch factor"):
        se.stretch_window(events, 0)


def test_a_stretched_window_is_the_window_of_the_stretched_piece():
    """Windows are stretched on the piece's own time line: cut then stretched (given the steps before the cut)
    equals stretched then cut, token for token (shifts below 1 s / factor split into no more tokens)."""
    rng = np.random.default_rng(3)
    events = []
    for _ in range(200):
        events += [se.note_on(int(rng.integers(40, 80))), se.time_shift(int(rng.integers(1, 60)))]
    whole = se.stretch_window(events, 1.13)
    for a, b in ((0, 50), (37, 120), (101, 400)):
        before = int(se.token_steps(events[:a]).sum())
        assert se.stretch_window(events[a:b], 1.13, before) == whole[a:b], (a, b)
        assert before == se.events_steps(events[:a])


def test_midi_file_round_trip(tmp_path):
    src = write_midi(tmp_path / "a.mid")
    events = se.midi_to_events(src, FPS)
    out = se.events_to_midi(events, tmp_path / "out" / "score.mid")
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))
    assert se.midi_to_events(out, FPS) == events
    got = sorted((n.pitch, round(n.start, 3), round(n.end, 3), n.velocity) for n in read_midi(out))
    assert got == sorted((p, round(a, 2), round(b, 2), v) for p, a, b, v in NOTES)


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match=r"\(2, 128, F\)"):
        se.roll_to_events(np.zeros((128, 10), np.uint8), FPS)
    with pytest.raises(InputError, match="outside the vocabulary"):
        se.events_to_roll([se.VOCAB_SIZE + 3], FPS)
    with pytest.raises(InputError, match="fps"):
        se.roll_to_events(np.zeros((2, 128, 10), np.uint8), 0)


def test_dataset_summary(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "rolls").mkdir(parents=True)
    tracks = []
    for i, (genre, split) in enumerate([("folk", "train"), ("folk", "train"), ("jazz", "test")]):
        roll = np.zeros((2, 128, 200), np.uint8)
        roll[0, 60 + i, 10:50] = roll[1, 60 + i, 10] = 90
        np.save(data / "rolls" / f"t{i}.npy", roll)
        tracks.append({"id": f"t{i}", "genre": genre, "split": split, "roll": f"rolls/t{i}.npy"})
    tracks.append({"id": "audio-only", "genre": "jazz", "split": "train", "roll": None})
    (data / "manifest.json").write_text(json.dumps({"roll_fps": FPS, "genres": ["folk", "jazz"], "tracks": tracks}))
    table = se.dataset_events(data)
    assert table["train"]["folk"] == {"pieces": 2, "events": 2 * 8, "seconds": pytest.approx(4.0)}
    assert set(table) == {"train", "test"} and table["test"]["jazz"]["pieces"] == 1
    assert se.main(["--data", str(data)]) == 0
    assert "folk" in capsys.readouterr().out
    assert se.main(["--data", str(tmp_path / "none")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
