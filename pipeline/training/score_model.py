"""A score for pieces asked for by genre alone: a per-genre Markov chain over chords.

Stage 0 renders a score well (its linear path takes taps from the sounding notes, models/score.py)
but does not invent pitch: a piece with a genre and no MIDI has no score and comes out as
filtered noise.  Until a learned symbolic stage exists, this module writes the score the classic
way (algorithmic composition with Markov chains): the training split's piano rolls, read every
``STEP`` seconds as chords (the set of sounding pitches), give per-genre transition counts
chord -> next chord, including "the piece ends here".  Sampling the chain recombines passages of
the genre's training scores at the chords they share; it ends where a training piece ended, after
about as long as the genre's training pieces last, and the piece ends with its score (plus a
release), as a MIDI-prompted piece does.

The model is a small JSON in the run folder (``score_model.json``), fitted after training from the
dataset (``write_score_model``) and read at generation time (``sample_roll``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from models.roll import VELOCITY_MAX, empty_roll
from pipeline.corpus.dataset import load_manifest
from pipeline.io import atomic_write_json

STEP = 0.1  # seconds per chord step
FILE = "score_model.json"


def chords(roll: np.ndarray, frames_per_step: int) -> list[tuple[tuple[int, ...], int]]:
    """uint8 roll (2, 128, F) -> [(sounding pitches, mean velocity)] every ``frames_per_step`` frames."""
    out = []
    for g in range(0, roll.shape[2], frames_per_step):
        vel = roll[0, :, g]
        pitches = tuple(int(p) for p in np.flatnonzero(vel))
        out.append((pitches, int(vel[list(pitches)].mean()) if pitches else 0))
    return out


def fit(pieces: Iterable[tuple[str, np.ndarray]], fps: int) -> dict:
    """(genre, roll) pairs -> the chain as a JSON-ready dict (chord ids, transitions, starts)."""
    hop = max(1, int(round(STEP * fps)))
    ids: dict[tuple[int, ...], int] = {}
    velocity: dict[int, list[int]] = defaultdict(list)
    nxt: dict[str, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))
    starts: dict[str, Counter] = defaultdict(Counter)
    lengths: dict[str, list[int]] = defaultdict(list)
    for genre, roll in pieces:
        seq = chords(roll, hop)
        while seq and not seq[-1][0]:  # trailing silence: the piece ends at its last note
            seq.pop()
        if not seq:
            continue
        lengths[genre].append(len(seq))
        state = [ids.setdefault(p, len(ids)) for p, _ in seq]
        for (_, v), i in zip(seq, state):
            velocity[i].append(v)
        starts[genre][state[0]] += 1
        for a, b in zip(state, state[1:] + [-1]):  # -1: the piece ends
            nxt[genre][a][b] += 1
    chord_list = [list(p) for p, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    return {"version": 1, "step_frames": hop, "fps": fps, "chords": chord_list,
            "velocity": [int(np.median(velocity[i])) if velocity[i] else 0 for i in range(len(chord_list))],
            "genres": {g: {"start": sorted(starts[g].items()), "lengths": lengths[g],
                           "next": {str(a): sorted(c.items()) for a, c in nxt[g].items()}} for g in starts}}


def _draw(pairs, rng: np.random.Generator) -> int:
    ids, counts = zip(*pairs)
    p = np.asarray(counts, dtype=np.float64)
    return int(ids[rng.choice(len(ids), p=p / p.sum())])


def sample_roll(model: dict, genre: str, max_frames: int, seed: int) -> np.ndarray | None:
    """A uint8 roll (2, 128, F <= max_frames) sampled from ``genre``'s chain; None if the genre has
    no scores.  Its length follows the genre's training pieces: a length L is drawn from theirs, an
    ending drawn before L / 2 starts a new phrase instead, and the score stops by 1.25 L."""
    g = model["genres"].get(genre)
    if not g or not g["start"]:
        return None
    rng = np.random.default_rng(seed)
    hop, steps = int(model["step_frames"]), []
    target = int(rng.choice(g["lengths"])) if g.get("lengths") else None
    state = _draw(g["start"], rng)
    while len(steps) * hop < max_frames and (target is None or len(steps) < (5 * target) // 4):
        if state < 0:
            if target is None or len(steps) >= target // 2:
                break
            state = _draw(g["start"], rng)  # too short to end: a new phrase
        steps.append(state)
        follow = g["next"].get(str(state))
        state = _draw(follow, rng) if follow else -1
    frames = min(max_frames, len(steps) * hop)
    roll = empty_roll(frames)
    prev: set[int] = set()
    for k, s in enumerate(steps):
        pitches, a = set(model["chords"][s]), k * hop
        v = np.uint8(max(1, min(VELOCITY_MAX, model["velocity"][s])))
        for p in pitches:
            roll[0, p, a:a + hop] = v
        for p in pitches - prev:
            roll[1, p, a] = v
        prev = pitches
    return roll[:, :, :frames]


def write_score_model(data_dir: str | Path, run_dir: str | Path) -> Path | None:
    """Fit the chain on the dataset's training scores and write ``RUN/score_model.json``
    (None when no training track has a score)."""
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    pieces = [(t["genre"], np.load(data_dir / t["roll"], allow_pickle=False))
              for t in manifest["tracks"] if t["split"] == "train" and t.get("roll")]
    if not pieces:
        return None
    path = Path(run_dir) / FILE
    atomic_write_json(path, fit(pieces, int(manifest.get("roll_fps", 100))))
    return path


def read_score_model(run_dir: str | Path) -> dict | None:
    """The run's chain, or None when it has none (trained before this existed, or no scores)."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None
