"""Novelty and style of generated scores, against the training scores and the genre's held-out scores.

Novelty (does a generator write new music or replay its training?), on chords read every
``score_model.STEP`` (0.1 s) as ``score_model.chords`` reads them (the set of sounding pitches):

- ``unseen_transitions``: share of the generated chord changes (consecutive distinct chords, silence
  included as a chord) that never occur in any training score;
- ``unseen_onset_4grams``: share of generated 4-grams of onset sets (the pitches struck in a 0.1 s
  step, steps without onsets skipped) that never occur in training;
- ``longest_copy_seconds``: the longest run of 0.1 s chords equal to a run of one training piece (the
  longest common substring; silence never counts as copied), and ``longest_copy_changes``: the same
  over chord changes (the run-length-collapsed chord sequences; chords changed in that run).
- ``longest_copied_passage_seconds``: the longest time from the first to the last chord change inside such
  a run (its inner chords, their durations copied too).  A run's first and last chords are cut by where the
  run starts and ends, so they say only "this chord was held at least this long": one pitch held 4 s, as a
  training piece holds it, is a 4 s ``longest_copy_seconds`` and a 0 s passage.

Style (Yang & Lerch 2018, "On the evaluation of generative models in music"): features of each set
pooled over its pieces, and the overlapping area (OA, 1 = the same distribution, 0 = disjoint) of the
generated set's and the held-out set's distributions: the pitch-class histogram of onsets (discrete,
OA = sum of the bin-wise minimum), and Gaussian kernel density estimates for the pitch range of each
4 s segment, the polyphony (sounding pitches) of each sounding 0.1 s step, and the inter-onset
intervals (log2 seconds between successive onset times).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from models.roll import ROLL_SHAPE
from pipeline.corpus.score_events import STEPS_PER_SECOND, event_clock, events_seconds, events_to_notes, is_note_on
from pipeline.training.score_model import STEP, chords

SEGMENT_SECONDS = 4.0  # pitch range is measured per segment of this length
NGRAM = 4  # onset-set n-grams
GRID = 512  # points of the KDE grid


def _hop(fps: int) -> int:
    return max(1, int(round(STEP * fps)))


def _chord_seq(roll: np.ndarray, fps: int) -> list[tuple[int, ...]]:
    return [p for p, _ in chords(roll, _hop(fps))]


def _collapsed(seq: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return [c for i, c in enumerate(seq) if i == 0 or c != seq[i - 1]]


def _onset_sets(roll: np.ndarray, fps: int) -> list[tuple[int, ...]]:
    hop = _hop(fps)
    out = []
    for g in range(0, roll.shape[2], hop):
        struck = np.flatnonzero(roll[1, :, g:g + hop].any(axis=1))
        if len(struck):
            out.append(tuple(int(p) for p in struck))
    return out


def _longest_common(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(run, passage) of int arrays a and b (values that differ never match), one pass: run, the length of their
    longest common substring; passage, the most steps of a common substring without its first and last values'
    runs (its inner values; 0 for a substring of one or two distinct values)."""
    n = len(a)
    fwd = np.ones(n, np.int64)  # fwd[k]: steps from k on with the value a[k]
    for k in range(n - 2, -1, -1):
        if a[k + 1] == a[k]:
            fwd[k] = fwd[k + 1] + 1
    run = passage = back = 0  # back: steps up to i with the value a[i]
    prev = np.zeros(len(b) + 1, np.int64)
    for i, x in enumerate(a):
        back = back + 1 if i and a[i - 1] == x else 1
        cur = np.zeros_like(prev)
        cur[1:] = np.where(b == x, prev[:-1] + 1, 0)
        runs = cur[cur > 0]  # (M,) lengths L of the common substrings ending at a[i]
        if len(runs):
            run = max(run, int(runs.max()))
            lead = np.minimum(fwd[i - runs + 1], runs)
            passage = max(passage, int(np.maximum(runs - lead - np.minimum(back, runs), 0).max()))
        prev = cur
    return run, passage


def _ids(seqs: Sequence[Sequence[tuple]], table: dict, silence: int, sep: int) -> np.ndarray:
    """Sequences of chords -> one int array: chord ids, ``silence`` for the empty chord, ``sep`` between pieces."""
    out: list[int] = []
    for s in seqs:
        out += [silence if not c else table.setdefault(c, len(table)) for c in s] + [sep]
    return np.asarray(out, np.int64)


def _check(rolls: Sequence[np.ndarray], what: str) -> None:
    if not len(rolls):
        raise ValueError(f"no {what} rolls")
    for r in rolls:
        if not isinstance(r, np.ndarray) or r.ndim != 3 or r.shape[:2] != ROLL_SHAPE:
            raise ValueError(f"a {what} roll is a (2, 128, F) array, got {getattr(r, 'shape', type(r).__name__)}")


def novelty(generated_rolls: Sequence[np.ndarray], training_rolls: Sequence[np.ndarray], fps: int) -> dict:
    """How much of the generated scores is new: shares of unseen chord changes and onset 4-grams, and the
    longest verbatim copy of one training piece (rules in the module docstring)."""
    _check(generated_rolls, "generated")
    _check(training_rolls, "training")
    train_chords = [_chord_seq(r, fps) for r in training_rolls]
    seen_moves = {m for s in train_chords for m in zip(_collapsed(s), _collapsed(s)[1:])}
    seen_grams = set()
    for r in training_rolls:
        o = _onset_sets(r, fps)
        seen_grams.update(zip(*(o[i:] for i in range(NGRAM))))
    table: dict[tuple[int, ...], int] = {}
    train_steps = _ids(train_chords, table, silence=-2, sep=-3)
    train_moves = _ids([_collapsed(s) for s in train_chords], table, silence=-4, sep=-3)
    moves = unseen_moves = grams = unseen_grams = 0
    pieces = []
    for r in generated_rolls:
        seq = _chord_seq(r, fps)
        own = list(zip(_collapsed(seq), _collapsed(seq)[1:]))
        o = _onset_sets(r, fps)
        own_grams = list(zip(*(o[i:] for i in range(NGRAM))))
        moves += len(own)
        unseen_moves += sum(m not in seen_moves for m in own)
        grams += len(own_grams)
        unseen_grams += sum(g not in seen_grams for g in own_grams)
        steps = _ids([seq], dict(table), silence=-1, sep=-5)  # chords new to training get ids of their own
        changes = _ids([_collapsed(seq)], dict(table), silence=-4, sep=-5)
        run, passage = _longest_common(steps, train_steps)  # in 0.1 s steps
        pieces.append({"seconds": r.shape[2] / fps, "chord_changes": len(own),
                       "longest_copy_seconds": run * _hop(fps) / fps,
                       "longest_copy_changes": max(0, _longest_common(changes, train_moves)[0] - 1),
                       "longest_copied_passage_seconds": passage * _hop(fps) / fps})
    return {"transitions": moves, "unseen_transitions": unseen_moves / moves if moves else None,
            "onset_4grams": grams, "unseen_onset_4grams": unseen_grams / grams if grams else None,
            "longest_copy_seconds": max(p["longest_copy_seconds"] for p in pieces),
            "longest_copy_changes": max(p["longest_copy_changes"] for p in pieces),
            "longest_copied_passage_seconds": max(p["longest_copied_passage_seconds"] for p in pieces),
            "pieces": pieces}


# ----------------------------------------------------------------------------- style


def _features(rolls: Sequence[np.ndarray], fps: int) -> dict[str, np.ndarray]:
    """Pooled features of a set: onset pitch-class counts (12,), and samples of range, polyphony, log2 IOI."""
    hop, seg = _hop(fps), max(1, int(round(SEGMENT_SECONDS * fps)))
    pc = np.zeros(12)
    ranges, poly, ioi = [], [], []
    for r in rolls:
        on = r[1] > 0  # (128, F)
        pitches, frames = np.nonzero(on)
        np.add.at(pc, pitches % 12, 1)
        times = np.unique(frames) / fps
        gaps = np.diff(times)
        ioi += list(np.log2(gaps[gaps > 0]))
        sounding = r[0] > 0
        for a in range(0, r.shape[2], seg):
            used = np.flatnonzero(sounding[:, a:a + seg].any(axis=1))
            if len(used):
                ranges.append(float(used[-1] - used[0]))
        n = sounding[:, ::hop].sum(axis=0)
        poly += list(n[n > 0].astype(float))
    return {"pitch_class": pc, "pitch_range": np.asarray(ranges), "polyphony": np.asarray(poly),
            "ioi": np.asarray(ioi)}


def _kde(x: np.ndarray, grid: np.ndarray, floor: float) -> np.ndarray:
    """Gaussian KDE of samples x on ``grid`` (Scott's bandwidth, at least ``floor``), normalised on the grid."""
    bw = max(floor, 1.06 * float(np.std(x)) * len(x) ** -0.2)
    dens = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bw) ** 2).sum(axis=1)  # (GRID,)
    return dens / (dens.sum() * (grid[1] - grid[0]))


def overlap_area(a: np.ndarray, b: np.ndarray, floor: float) -> float | None:
    """Overlapping area of the KDEs of samples a and b (None when either is empty)."""
    if not len(a) or not len(b):
        return None
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    pad = 4 * max(floor, float(np.std(np.concatenate([a, b]))))
    grid = np.linspace(lo - pad, hi + pad, GRID)
    return float(np.minimum(_kde(a, grid, floor), _kde(b, grid, floor)).sum() * (grid[1] - grid[0]))


def style_overlap(generated_rolls: Sequence[np.ndarray], heldout_rolls: Sequence[np.ndarray], fps: int) -> dict:
    """Overlapping areas (0..1, 1 = same) of the generated and held-out sets' feature distributions, their
    mean, and each set's feature means (rules in the module docstring)."""
    _check(generated_rolls, "generated")
    _check(heldout_rolls, "held-out")
    g, h = _features(generated_rolls, fps), _features(heldout_rolls, fps)
    out: dict = {}
    if g["pitch_class"].sum() and h["pitch_class"].sum():
        out["pitch_class"] = float(np.minimum(g["pitch_class"] / g["pitch_class"].sum(),
                                              h["pitch_class"] / h["pitch_class"].sum()).sum())
    else:
        out["pitch_class"] = None
    floors = {"pitch_range": 1.0, "polyphony": 0.5, "ioi": 0.25}  # a semitone, half a note, a fifth of an octave
    for name, floor in floors.items():
        out[name] = overlap_area(g[name], h[name], floor)
    got = [v for v in out.values() if v is not None]
    out["mean"] = float(np.mean(got)) if got else None
    out["generated"] = {k: _mean(g[k]) for k in floors}
    out["heldout"] = {k: _mean(h[k]) for k in floors}
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) and math.isfinite(float(x.mean())) else None


def note_density(pieces: Sequence[Sequence[int]], opening: float = 4.0, span: float = 30.0) -> dict | None:
    """Onsets per second over each piece's first ``span`` s (median), the share of pieces with no onset in
    their first ``opening`` s, and with none at all (a silent score renders as silence)."""
    if not pieces:
        return None
    rates, quiet_openings, silent = [], 0, 0
    for ev in pieces:
        steps = event_clock(ev)[:-1] / STEPS_PER_SECOND  # time of each event
        onsets = np.array([t for t, tok in zip(steps, ev) if is_note_on(int(tok))])
        length = max(min(events_seconds(ev), span), 1e-9)
        rates.append(float(np.sum(onsets < span)) / length)
        quiet_openings += not np.any(onsets < opening)
        silent += len(onsets) == 0
    return {"pieces": len(pieces), "onsets_per_second_median": round(float(np.median(rates)), 3),
            "no_onset_in_first_seconds": opening, "quiet_opening_share": round(quiet_openings / len(pieces), 3),
            "silent_share": round(silent / len(pieces), 3)}


def chroma_repetition(roll: np.ndarray, fps: int, segment_seconds: float = 2.0) -> float | None:
    """Form as repetition: the roll (2, 128, F) cut into ``segment_seconds`` segments, each a pitch-class
    profile of its sounding frames; for every segment from the third on, its best cosine similarity with
    any segment at least two before it (material that comes back, not the chord still ringing), averaged.
    1: every segment restates an earlier one; near 0: nothing returns.  None under three sounding segments."""
    hop = max(1, int(round(segment_seconds * fps)))
    sounding = np.asarray(roll)[0] > 0  # (128, F)
    n = sounding.shape[1] // hop
    if n < 3:
        return None
    per_pitch = sounding[:, : n * hop].reshape(128, n, hop).sum(2).astype(np.float64)  # (128, S)
    chroma = np.stack([per_pitch[pc::12].sum(0) for pc in range(12)], 1)  # (S, 12)
    norm = np.linalg.norm(chroma, axis=1)
    ok = norm > 0
    unit = np.where(ok[:, None], chroma / np.maximum(norm, 1e-12)[:, None], 0.0)
    sim = unit @ unit.T  # (S, S) cosine
    best = [sim[i, : i - 1][ok[: i - 1]].max() for i in range(2, n) if ok[i] and ok[: i - 1].any()]
    return float(np.mean(best)) if best else None


def score_clip_features(events: Sequence[int], clip_seconds: float = 8.0, most: int = 8) -> list[np.ndarray]:
    """``music_metrics.note_features`` of the notes of a score (events), cut into its first ``most``
    whole clips of ``clip_seconds`` (notes by onset; a note ringing past its clip's end is cut there)."""
    from pipeline.evaluation.music_metrics import note_features

    notes = events_to_notes(events)
    out = []
    for k in range(min(most, int(events_seconds(events) // clip_seconds))):
        a, b = k * clip_seconds, (k + 1) * clip_seconds
        clip = [replace(n, start=n.start - a, end=min(n.end, b) - a) for n in notes if a <= n.start < b]
        out.append(note_features(clip, clip_seconds))
    return out


def score_clips(pieces: Sequence[tuple[int, Sequence[int]]], clip_seconds: float = 8.0) -> tuple[np.ndarray, list]:
    """(features (N, F), genre ids (N,)) of the clips (``score_clip_features``) of (genre id, events) pairs."""
    x, y = [], []
    for g, ev in pieces:
        for f in score_clip_features(ev, clip_seconds):
            x.append(f)
            y.append(int(g))
    return (np.stack(x) if x else np.zeros((0, 1))), y


def fit_score_classifier(train: Sequence[tuple[int, Sequence[int]]], clip_seconds: float = 8.0):
    """(a genre classifier fitted on the clips of the training scores, their genre ids)."""
    from pipeline.evaluation.music_metrics import fit_genre_classifier

    x, y = score_clips(train, clip_seconds)
    return fit_genre_classifier(x, y), y


def heard_genre(classifier, events: Sequence[int], clip_seconds: float = 8.0) -> int | None:
    """The genre id that ``classifier`` (``fit_score_classifier``) hears in most clips of a score (ties: the
    lower id); None for a score shorter than one clip."""
    feats = score_clip_features(events, clip_seconds)
    if not feats:
        return None
    return int(np.bincount(classifier.predict(np.stack(feats).astype(np.float64))).argmax())


def genre_by_score(train: Sequence[tuple[int, Sequence[int]]], heldout: Sequence[tuple[int, Sequence[int]]],
                   generated: Sequence[tuple[int, Sequence[int]]], n_genres: int, clip_seconds: float = 8.0) -> dict:
    """Is the genre in the notes themselves?  A classifier (``music_metrics.fit_genre_classifier``) fitted on
    ``score_clip_features`` of the real training scores ((genre id, events) pairs); its accuracy on clips of
    the real held-out scores and of the generated ones (labelled with the genre they were asked for).
    No audio: what it misses in generated audio that it finds here, the rendering lost."""
    from pipeline.evaluation.music_metrics import accuracy

    model, yt = fit_score_classifier(train, clip_seconds)
    xh, yh = score_clips(heldout, clip_seconds)
    xg, yg = score_clips(generated, clip_seconds)
    made = accuracy(model, xg, yg)
    per_genre = {g: (float(np.mean([p == g for p, y in zip(made["per_clip"], yg) if y == g]))
                     if g in yg else None) for g in range(n_genres)}
    return {"chance": 1.0 / n_genres, "clip_seconds": clip_seconds, "train_clips": len(yt),
            "real_heldout": accuracy(model, xh, yh)["accuracy"], "heldout_clips": len(yh),
            "generated": made["accuracy"], "generated_clips": len(yg), "generated_per_genre": per_genre}
