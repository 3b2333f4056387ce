"""pipeline/training/score_model.py: per-genre Markov chains over chords write scores for genre-only pieces."""

from __future__ import annotations

import numpy as np

from pipeline.training.score_model import chords, fit, read_score_model, sample_roll, write_score_model

FPS = 100


def roll_of(chord_seq: list[tuple[int, ...]], step_frames: int = 10, vel: int = 90) -> np.ndarray:
    """uint8 (2, 128, F): each chord for ``step_frames`` frames."""
    roll = np.zeros((2, 128, len(chord_seq) * step_frames), np.uint8)
    for k, ch in enumerate(chord_seq):
        for p in ch:
            roll[0, p, k * step_frames:(k + 1) * step_frames] = vel
            roll[1, p, k * step_frames] = vel
    return roll


FOLK = [(62, 66, 69)] * 4 + [(67, 71, 74)] * 2 + [(69, 73, 76)] * 3 + [(62, 66, 69)] * 2
CHORALE = [(48, 55, 64)] * 3 + [(53, 57, 65)] * 5 + [(43, 55, 62)] * 2


def test_chain_keeps_each_genres_chords_and_ends_like_its_pieces():
    model = fit([("folk", roll_of(FOLK)), ("folk", roll_of(FOLK[::-1])), ("chorale", roll_of(CHORALE))], FPS)
    for genre, pieces in (("folk", FOLK), ("chorale", CHORALE)):
        for seed in range(5):
            roll = sample_roll(model, genre, max_frames=10_000, seed=seed)
            got = {c for c, _ in chords(roll, 10)}
            assert got <= set(pieces), (genre, got)  # only the genre's own chords
            assert roll[1].sum() > 0 and (roll[1] > 0).sum() <= (roll[0] > 0).sum()
    a, b = (sample_roll(model, "folk", 10_000, seed=1) for _ in range(2))
    assert np.array_equal(a, b)  # seeded
    assert sample_roll(model, "polka", 1000, seed=0) is None


def test_a_piece_that_ends_by_itself_ends_on_a_chord_that_ended_a_training_piece():
    """What the length rule does not decide: below the 1.25 L cap a piece stops only by drawing the end,
    which the chain learned after each training piece's last chord; at the cap it stops on any chord."""
    model = fit([("folk", roll_of(FOLK)), ("folk", roll_of(FOLK[::-1])), ("chorale", roll_of(CHORALE))], FPS)
    for genre, pieces in (("folk", [FOLK, FOLK[::-1]]), ("chorale", [CHORALE])):
        cap = 5 * max(len(p) for p in pieces) // 4  # every training piece of a genre has the same length here
        finals = {p[-1] for p in pieces}
        ends = [chords(sample_roll(model, genre, max_frames=10_000, seed=s), 10) for s in range(40)]
        natural = [seq[-1][0] for seq in ends if len(seq) < cap]
        assert len(natural) >= 10, (genre, len(natural))  # the end is drawn, not only the cap reached
        assert set(natural) <= finals, (genre, set(natural), finals)
        assert {seq[-1][0] for seq in ends if len(seq) >= cap} - finals  # the cap alone cuts anywhere


def test_lengths_follow_the_training_pieces():
    """An ending drawn before half a training piece's length starts a new phrase; 1.25x is the limit."""
    model = fit([("folk", roll_of(FOLK * 3))], FPS)  # one piece of 33 steps: ends only after >= 16
    got = [sample_roll(model, "folk", max_frames=100_000, seed=s).shape[2] // 10 for s in range(20)]
    assert all(16 <= n <= 41 for n in got), got


def test_cap_and_round_trip(tmp_path):
    import json

    model = fit([("folk", roll_of(FOLK * 20))], FPS)
    assert sample_roll(model, "folk", max_frames=55, seed=0).shape == (2, 128, 55)
    data = tmp_path / "data"
    (data / "rolls").mkdir(parents=True)
    np.save(data / "rolls" / "a.npy", roll_of(FOLK))
    tracks = [{"id": "a", "genre": "folk", "split": "train", "roll": "rolls/a.npy"},
              {"id": "b", "genre": "folk", "split": "test", "roll": "rolls/missing.npy"}]
    (data / "manifest.json").write_text(json.dumps({"tracks": tracks, "genres": ["folk"], "roll_fps": FPS}))
    run = tmp_path / "run"
    run.mkdir()
    assert read_score_model(run) is None
    write_score_model(data, run)  # the test split is never read
    assert read_score_model(run)["genres"]["folk"]["start"]
