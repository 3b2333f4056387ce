"""pipeline/evaluation/score_metrics.py: novelty (unseen transitions, onset 4-grams, verbatim copies), style overlap."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.corpus.midi import Note, piano_roll
from pipeline.evaluation.score_metrics import novelty, overlap_area, style_overlap

FPS = 100


def piece(seed: int, n_chords: int = 40) -> np.ndarray:
    """A roll of random triads on C major roots (0.2-0.6 s each, some with a passing melody note), no silence inside."""
    rng = np.random.default_rng(seed)
    notes, t = [], 0.0
    for _ in range(n_chords):
        root = int(rng.choice([48, 50, 52, 53, 55, 57]))  # C major roots
        d = float(rng.choice([0.2, 0.3, 0.4, 0.6]))
        third = int(rng.choice([3, 4]))
        v = int(rng.integers(50, 110))
        notes += [Note(root + i, t, t + d, v, 0, 0, False) for i in (0, third, 7)]
        if rng.random() < 0.5:
            notes.append(Note(root + 12 + int(rng.choice([0, 2, 4])), t, t + d / 2, v, 0, 0, False))
        t += d
    return piano_roll(notes, fps=FPS)


def shifted(roll: np.ndarray, semitones: int) -> np.ndarray:
    return np.roll(roll, semitones, axis=1)


def test_a_copy_is_not_novel_and_a_transposition_is():
    train = [piece(s) for s in range(6)]
    copy = novelty([train[2]], train, FPS)
    assert copy["transitions"] > 20 and copy["unseen_transitions"] == 0.0 and copy["unseen_onset_4grams"] == 0.0
    assert copy["longest_copy_seconds"] == pytest.approx(train[2].shape[2] / FPS, abs=0.1)  # the whole piece
    assert copy["longest_copy_changes"] == copy["transitions"]
    new = novelty([shifted(train[2], 1)], train, FPS)  # a semitone up: no chord of it occurs in training
    assert new["unseen_transitions"] > 0.9 and new["unseen_onset_4grams"] == 1.0
    assert new["longest_copy_seconds"] <= 1.0 and new["longest_copy_changes"] <= 2


def test_a_splice_copies_half_and_adds_one_new_move():
    train = [piece(s) for s in range(4)]
    a, b = train[0], train[1]
    cut_a, cut_b = a.shape[2] // 2 // 10 * 10, b.shape[2] // 2 // 10 * 10  # on the 0.1 s grid
    splice = np.concatenate([a[:, :, :cut_a], b[:, :, cut_b:]], axis=2)
    got = novelty([splice], train, FPS)
    longest = max(cut_a, b.shape[2] - cut_b) / FPS
    assert longest - 0.5 <= got["longest_copy_seconds"] <= longest + 0.5  # the longer half, not the whole
    assert got["longest_copy_seconds"] < splice.shape[2] / FPS - 2.0
    assert 0 < got["unseen_transitions"] <= 2 / got["transitions"]  # only the junction can be new


def block_chords(chords: list[tuple[tuple[int, ...], float]]) -> np.ndarray:
    """A roll of (pitches, seconds) chords one after the other."""
    notes, t = [], 0.0
    for pitches, d in chords:
        notes += [Note(p, t, t + d, 80, 0, 0, False) for p in pitches]
        t += d
    return piano_roll(notes, fps=FPS)


def test_a_held_note_is_a_long_copy_but_no_copied_passage():
    """One pitch held 4 s as a training piece holds it: a 4 s common run, no chord change copied inside it.
    A copied progression's passage is its inner chords: the first and last are cut by the run's ends."""
    train = [block_chords([((67,), 6.0)]), block_chords([((48, 52, 55), 1.0), ((50, 53, 57), 0.5),
                                                          ((47, 50, 55), 0.7), ((48, 52, 55), 2.0)])]
    held = novelty([block_chords([((67,), 4.0)])], train, FPS)
    assert held["longest_copy_seconds"] == pytest.approx(4.0, abs=0.1)
    assert held["longest_copied_passage_seconds"] == 0.0
    same = block_chords([((48, 52, 55), 0.3), ((50, 53, 57), 0.5), ((47, 50, 55), 0.7), ((48, 52, 55), 0.4)])
    got = novelty([same], train, FPS)
    assert got["longest_copy_seconds"] == pytest.approx(1.9, abs=0.1)
    assert got["longest_copied_passage_seconds"] == pytest.approx(1.2, abs=0.1)  # 0.5 + 0.7 s
    other = block_chords([((48, 52, 55), 0.3), ((50, 53, 57), 0.8), ((47, 50, 55), 0.7), ((48, 52, 55), 0.4)])
    assert novelty([other], train, FPS)["longest_copied_passage_seconds"] <= 0.8  # a new rhythm breaks the copy


def test_silence_is_never_a_copy():
    train = [np.zeros((2, 128, 800), np.uint8), piece(0)]
    quiet = np.zeros((2, 128, 500), np.uint8)
    quiet[:, 60, 100:120] = 90
    got = novelty([quiet], train, FPS)
    assert got["longest_copy_seconds"] <= 0.2


def test_style_overlap_is_one_for_the_same_set_and_drops_for_another_style():
    held = [piece(s) for s in range(10, 14)]
    same = style_overlap(held, held, FPS)
    for k in ("pitch_class", "pitch_range", "polyphony", "ioi"):
        assert same[k] == pytest.approx(1.0, abs=1e-3), k
    close = style_overlap([piece(s) for s in range(20, 24)], held, FPS)  # the same style, other pieces
    assert close["mean"] > 0.8
    mono = []  # a single high voice of fast sixteenths: other polyphony, range and rhythm
    for s in range(4):
        rng = np.random.default_rng(s)
        notes = [Note(int(rng.integers(84, 90)), 0.1 * i, 0.1 * i + 0.08, 80, 0, 0, False) for i in range(150)]
        mono.append(piano_roll(notes, fps=FPS))
    far = style_overlap(mono, held, FPS)
    assert far["polyphony"] < 0.1 and far["ioi"] < 0.5 and far["mean"] < close["mean"] - 0.3
    assert far["generated"]["polyphony"] == pytest.approx(1.0) and far["heldout"]["polyphony"] > 3
    up = style_overlap([shifted(r, 6) for r in held], held, FPS)  # a tritone up: other pitch classes only
    assert up["polyphony"] == pytest.approx(1.0, abs=1e-3) and up["pitch_class"] < same["pitch_class"] - 0.2


def test_overlap_area_of_known_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)
    assert overlap_area(a, b, floor=0.01) == pytest.approx(0.617, abs=0.03)  # 2 Phi(-1/2) for N(0,1) vs N(1,1)
    assert overlap_area(a, np.array([]), floor=0.01) is None


def test_bad_input():
    with pytest.raises(ValueError, match="no generated rolls"):
        novelty([], [piece(0)], FPS)
    with pytest.raises(ValueError, match=r"\(2, 128, F\)"):
        style_overlap([np.zeros((128, 4))], [piece(0)], FPS)


def test_note_density_counts_onsets_and_finds_silent_openings():
    from pipeline.corpus.score_events import END, note_off, note_on, time_shift
    from pipeline.evaluation.score_metrics import note_density

    busy = []  # 2 onsets per second for 10 s
    for i in range(20):
        busy += [note_on(60 + i % 5), time_shift(50), note_off(60 + i % 5)]
    late = [time_shift(100)] * 5 + busy  # 5 s of silence first
    silent = [time_shift(100)] * 8 + [END]
    d = note_density([busy + [END], late + [END], silent])
    assert d["pieces"] == 3 and d["silent_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert d["quiet_opening_share"] == pytest.approx(2 / 3, abs=1e-3)  # `late` and `silent` open without a note
    assert d["onsets_per_second_median"] == pytest.approx(20 / 15, abs=1e-3)  # busy 2/s, late 20/15 s, silent 0
    assert note_density([]) is None


def test_chroma_repetition_finds_material_that_returns():
    from pipeline.evaluation.score_metrics import chroma_repetition

    def roll_of(chords: list[tuple[int, ...]], seconds: float = 2.0) -> np.ndarray:
        notes = [Note(p, i * seconds, (i + 1) * seconds, 80, 0, 0, False) for i, c in enumerate(chords) for p in c]
        return piano_roll(notes, fps=FPS)

    c, f, g, a = (60, 64, 67), (65, 69, 72), (67, 71, 74), (69, 73, 76)
    rondo = roll_of([c, f, c, g, c, f, c, g])  # each restates one 2+ back, but the first g
    walk = roll_of([(60 + i,) for i in range(8)])  # a chromatic walk up: no pitch class returns
    assert chroma_repetition(rondo, FPS) == pytest.approx((5 + 1 / 3) / 6)  # g shares one pitch class (G) with c
    assert chroma_repetition(walk, FPS) == pytest.approx(0.0)
    assert chroma_repetition(roll_of([c, a]), FPS) is None  # under three segments


def test_events_to_notes_reads_seconds_and_velocity():
    from pipeline.corpus.score_events import END, bin_velocity, events_to_notes, note_off, note_on, time_shift, velocity

    ev = [velocity(5), note_on(60), note_on(64), time_shift(50), note_off(60), time_shift(25), END]
    notes = events_to_notes(ev)
    assert [(n.pitch, n.start, n.end) for n in notes] == [(60, 0.0, 0.5), (64, 0.0, 0.75)]  # 64 released at END
    assert all(n.velocity == bin_velocity(5) for n in notes)


def _slow(seed: int) -> list[int]:
    """A made-up genre: 20 slow low chords of 1.2 s (24 s)."""
    from pipeline.corpus.score_events import END, note_off, note_on, time_shift

    rng, ev = np.random.default_rng(seed), []
    for _ in range(20):
        ps = [int(p) for p in rng.choice(np.arange(40, 55), 3, replace=False)]
        ev += [note_on(p) for p in ps] + [time_shift(100), time_shift(20)] + [note_off(p) for p in ps]
    return ev + [END]


def _fast(seed: int, notes: int = 200) -> list[int]:
    """Another: ``notes`` fast high notes of 0.12 s."""
    from pipeline.corpus.score_events import END, note_off, note_on, time_shift

    rng, ev = np.random.default_rng(seed), []
    for _ in range(notes):
        p = int(rng.integers(72, 90))
        ev += [note_on(p), time_shift(12), note_off(p)]
    return ev + [END]


def test_genre_by_score_finds_the_genre_in_the_notes():
    """Two made-up genres (slow low chords, fast high runs): a score of each is recognised as its genre,
    and a generator that wrote the other genre's notes is not."""
    from pipeline.evaluation.score_metrics import genre_by_score, score_clip_features

    slow, fast = _slow, _fast
    assert len(score_clip_features(slow(0))) == 3  # 24 s: three whole 8 s clips
    train = [(0, slow(s)) for s in range(6)] + [(1, fast(s)) for s in range(6)]
    held = [(0, slow(10)), (1, fast(10))]
    right = genre_by_score(train, held, [(0, slow(20)), (1, fast(20))], 2)
    assert right["real_heldout"] == 1.0 and right["generated"] == 1.0 and right["chance"] == 0.5
    swapped = genre_by_score(train, held, [(1, slow(20)), (0, fast(20))], 2)
    assert swapped["generated"] == 0.0 and swapped["generated_per_genre"] == {0: 0.0, 1: 0.0}


def test_heard_genre_names_the_genre_most_clips_sound_like():
    """A score with no genre asked is judged by the genre its notes sound like: the classifier fitted on the
    training scores' clips names slow chords 0 and fast runs 1; a score shorter than one clip has none."""
    from pipeline.evaluation.score_metrics import fit_score_classifier, heard_genre

    train = [(0, _slow(s)) for s in range(6)] + [(1, _fast(s)) for s in range(6)]
    model, labels = fit_score_classifier(train)
    assert sorted(set(labels)) == [0, 1]
    assert heard_genre(model, _slow(30)) == 0 and heard_genre(model, _fast(30)) == 1
    assert heard_genre(model, _fast(31, notes=40)) is None  # 4.8 s: no whole 8 s clip
