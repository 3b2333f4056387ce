"""The score tier's event vocabulary (the one owner): piano rolls <-> note events <-> MIDI.

A score is a sequence of performance events (Oore et al. 2018, "This time with feeling"), with no
bar or beat information, so estimated scores of recordings fit as well as written ones:

    PAD | END | TIME_SHIFT 1..100 (10 ms steps, up to 1 s) | NOTE_ON pitch | NOTE_OFF pitch | VELOCITY bin

- Time advances only by TIME_SHIFT; a gap longer than 1 s is several shifts.  Times are whole
  10 ms steps: a roll at ``fps`` frames/s maps frame g to step ``round(g * 100 / fps)`` (exact for
  ``fps <= 100``; finer rolls are quantised to 10 ms).
- VELOCITY sets the velocity (16 bins of 8: bin ``v // 8``, played as ``8 * bin + 4``) of every
  following NOTE_ON until the next VELOCITY.  Before the first VELOCITY, notes play at
  ``DEFAULT_VELOCITY``.
- At one instant the events come in a fixed order: NOTE_OFFs (ascending pitch), then NOTE_ONs
  (ascending pitch, a VELOCITY before each one whose bin differs from the current one).  A
  NOTE_ON of a pitch that sounds re-strikes it (ends the old note there).
- END closes the piece at the current time: notes still sounding end there.  ``roll_to_events``
  keeps the roll's leading and trailing silence, so the roll's length is the END's time.

A roll is uint8 ``(2, 128, F)`` as ``pipeline.corpus.midi.piano_roll`` makes it ([0] velocity while a note
sounds, [1] velocity on its onset frame).  Events keep one velocity per note (its onset's), so
``events_to_roll(roll_to_events(roll))`` is ``roll`` wherever velocities are on the bin grid and no
two notes of one pitch overlap (the roll's [0] then holds each note's own velocity).

``python -m pipeline.corpus.score_events --data DIR`` prints a dataset's event counts and seconds per genre.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import mido
import numpy as np

from models.roll import ROLL_FPS, empty_roll
from pipeline.corpus.dataset import load_manifest
from pipeline.corpus.midi import Note, piano_roll, read_midi
from pipeline.errors import InputError, StrataError
from pipeline.io import atomic_path, load_npy

STEPS_PER_SECOND = 100  # one TIME_SHIFT step is 10 ms
MAX_SHIFT = 100  # steps in the longest TIME_SHIFT (1 s)
N_PITCHES = 128
N_VELOCITY_BINS = 16
VELOCITY_BIN_WIDTH = 8  # MIDI velocity 0..127 -> 16 bins
DEFAULT_VELOCITY_BIN = 8  # velocity 68 for NOTE_ONs before any VELOCITY event

PAD = 0
END = 1
SHIFT_BASE = 2  # TIME_SHIFT n (1..100) is SHIFT_BASE + n - 1
NOTE_ON_BASE = SHIFT_BASE + MAX_SHIFT
NOTE_OFF_BASE = NOTE_ON_BASE + N_PITCHES
VELOCITY_BASE = NOTE_OFF_BASE + N_PITCHES
VOCAB_SIZE = VELOCITY_BASE + N_VELOCITY_BINS  # 374


# ----------------------------------------------------------------------------- tokens


def time_shift(steps: int) -> int:
    if not 1 <= steps <= MAX_SHIFT:
        raise ValueError(f"a TIME_SHIFT is 1..{MAX_SHIFT} steps, got {steps}")
    return SHIFT_BASE + steps - 1


def note_on(pitch: int) -> int:
    return NOTE_ON_BASE + _pitch(pitch)


def note_off(pitch: int) -> int:
    return NOTE_OFF_BASE + _pitch(pitch)


def velocity(bin_: int) -> int:
    if not 0 <= bin_ < N_VELOCITY_BINS:
        raise ValueError(f"a velocity bin is 0..{N_VELOCITY_BINS - 1}, got {bin_}")
    return VELOCITY_BASE + bin_


def _pitch(pitch: int) -> int:
    if not 0 <= pitch < N_PITCHES:
        raise ValueError(f"a pitch is 0..{N_PITCHES - 1}, got {pitch}")
    return int(pitch)


def is_time_shift(tok: int) -> bool:
    return SHIFT_BASE <= tok < NOTE_ON_BASE


def is_note_on(tok: int) -> bool:
    return NOTE_ON_BASE <= tok < NOTE_OFF_BASE


def is_note_off(tok: int) -> bool:
    return NOTE_OFF_BASE <= tok < VELOCITY_BASE


def is_velocity(tok: int) -> bool:
    return VELOCITY_BASE <= tok < VOCAB_SIZE


def shift_steps(tok: int) -> int:
    """10 ms steps of a TIME_SHIFT token (0 for any other token)."""
    return tok - SHIFT_BASE + 1 if is_time_shift(tok) else 0


def token_seconds(tok: int) -> float:
    """Seconds a token advances time (the ``seconds_of`` of ``ScoreTransformer.generate``)."""
    return shift_steps(tok) / STEPS_PER_SECOND


def velocity_bin(v: int) -> int:
    """MIDI velocity 1..127 -> bin 0..15."""
    return min(N_VELOCITY_BINS - 1, max(0, int(v)) // VELOCITY_BIN_WIDTH)


def bin_velocity(bin_: int) -> int:
    """Bin 0..15 -> the MIDI velocity it plays (the middle of the bin: 4, 12, ..., 124)."""
    return VELOCITY_BIN_WIDTH * bin_ + VELOCITY_BIN_WIDTH // 2


def token_name(tok: int) -> str:
    """A readable name: ``SHIFT_30``, ``ON_60``, ``OFF_60``, ``VEL_12``, ``END``, ``PAD``."""
    if tok == PAD:
        return "PAD"
    if tok == END:
        return "END"
    if is_time_shift(tok):
        return f"SHIFT_{shift_steps(tok)}"
    if is_note_on(tok):
        return f"ON_{tok - NOTE_ON_BASE}"
    if is_note_off(tok):
        return f"OFF_{tok - NOTE_OFF_BASE}"
    if is_velocity(tok):
        return f"VEL_{tok - VELOCITY_BASE}"
    raise ValueError(f"token {tok} is outside the vocabulary 0..{VOCAB_SIZE - 1}")


def describe() -> dict:
    """The vocabulary as JSON (for a model's description: the ids its tokens mean)."""
    return {"name": "strata-score-events", "version": 1, "vocab_size": VOCAB_SIZE, "pad": PAD, "end": END,
            "time_shift": [SHIFT_BASE, MAX_SHIFT], "step_seconds": 1 / STEPS_PER_SECOND,
            "note_on": NOTE_ON_BASE, "note_off": NOTE_OFF_BASE, "velocity": [VELOCITY_BASE, N_VELOCITY_BINS]}


# ----------------------------------------------------------------------------- notes <-> events


class _Note(NamedTuple):
    pitch: int
    on: int  # step (10 ms)
    off: int  # step, > on
    bin: int  # velocity bin


def _notes_to_events(notes: Sequence[_Note], end_step: int) -> list[int]:
    """Notes (at most one sounding per pitch) -> events in the canonical order, closed by END."""
    at: dict[int, tuple[list[int], list[tuple[int, int]]]] = {}  # step -> (offs, ons)
    for n in notes:
        if n.on >= end_step:
            continue
        at.setdefault(n.on, ([], []))[1].append((n.pitch, n.bin))
        at.setdefault(min(n.off, end_step), ([], []))[0].append(n.pitch)
    out: list[int] = []
    now, vel = 0, None
    for step in sorted(at):
        out += _shifts(step - now)
        now = step
        offs, ons = at[step]
        out += [note_off(p) for p in sorted(offs)]
        for p, b in sorted(ons):
            if b != vel:
                out.append(velocity(b))
                vel = b
            out.append(note_on(p))
    out += _shifts(end_step - now)
    out.append(END)
    return out


def _shifts(steps: int) -> list[int]:
    full, rest = divmod(max(0, steps), MAX_SHIFT)
    return [time_shift(MAX_SHIFT)] * full + ([time_shift(rest)] if rest else [])


def _events_to_notes(events: Sequence[int]) -> tuple[list[_Note], int]:
    """Events -> (notes, end step); stops at END (the end; notes sounding there are released there),
    else ends with the last note (a note struck last lasts one step)."""
    now, vel, ended = 0, DEFAULT_VELOCITY_BIN, False
    sounding: dict[int, tuple[int, int]] = {}  # pitch -> (on step, bin)
    notes: list[_Note] = []

    def release(p: int) -> None:
        on, b = sounding.pop(p)
        notes.append(_Note(p, on, max(now, on + 1), b))

    for tok in events:
        tok = int(tok)
        if tok == END:
            ended = True
            break
        if is_time_shift(tok):
            now += shift_steps(tok)
        elif is_velocity(tok):
            vel = tok - VELOCITY_BASE
        elif is_note_on(tok):
            p = tok - NOTE_ON_BASE
            if p in sounding:
                release(p)  # a re-strike
            sounding[p] = (now, vel)
        elif is_note_off(tok):
            p = tok - NOTE_OFF_BASE
            if p in sounding:
                release(p)
        elif tok != PAD:
            raise InputError(f"event {tok} is outside the vocabulary 0..{VOCAB_SIZE - 1}")
    for p in sorted(sounding):
        release(p)
    if ended:  # the piece ends at END: a note struck there has no length
        return sorted((n._replace(off=min(n.off, now)) for n in notes if n.on < now), key=_order), now
    return sorted(notes, key=_order), max([now] + [n.off for n in notes])


def events_to_notes(events: Sequence[int]) -> list[Note]:
    """Events -> ``pipeline.corpus.midi.Note`` objects in seconds (velocity from the bin, program 0, channel 0),
    ordered by onset then pitch: what a listener of the score hears, for measures written over notes."""
    sec = 1.0 / STEPS_PER_SECOND
    notes, _ = _events_to_notes(events)
    return [Note(n.pitch, n.on * sec, n.off * sec, bin_velocity(n.bin), 0, 0, False) for n in notes]


def first_onset_seconds(events: Sequence[int]) -> float | None:
    """Seconds to the first NOTE_ON of a score (events), or None for a score without notes."""
    notes, _ = _events_to_notes(events)
    return min(n.on for n in notes) / STEPS_PER_SECOND if notes else None


def last_note_end_seconds(events: Sequence[int]) -> float | None:
    """Seconds to the end of the last sounding note of a score (events), or None for a score without notes."""
    notes, _ = _events_to_notes(events)
    return max(n.off for n in notes) / STEPS_PER_SECOND if notes else None


def _order(n: _Note) -> tuple[int, int]:
    return n.on, n.pitch


def _roll_notes(roll: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(pitch, on frame, off frame, onset velocity) of a roll: a note starts at an onset ([1] > 0) or
    where [0] starts sounding without one, and lasts while [0] sounds, up to the next onset."""
    notes = []
    for p in np.flatnonzero(roll[0].any(axis=1) | roll[1].any(axis=1)):
        held = (roll[0, p] > 0) | (roll[1, p] > 0)  # (F,)
        start = roll[1, p] > 0
        start[1:] |= held[1:] & ~held[:-1]
        start[0] |= held[0]
        ons = np.flatnonzero(start)
        stops = np.flatnonzero(~held)
        for k, a in enumerate(ons):
            nxt = ons[k + 1] if k + 1 < len(ons) else roll.shape[2]
            i = np.searchsorted(stops, a)
            b = min(nxt, stops[i] if i < len(stops) else roll.shape[2])
            v = int(roll[1, p, a]) or int(roll[0, p, a])
            notes.append((int(p), int(a), int(b), v))
    return notes


def _check_roll(roll: np.ndarray, fps: int) -> None:
    if not isinstance(roll, np.ndarray) or roll.ndim != 3 or roll.shape[:2] != (2, N_PITCHES):
        shape = getattr(roll, "shape", type(roll).__name__)
        raise InputError(f"a piano roll is a (2, 128, F) array, got {shape}")
    if not np.issubdtype(roll.dtype, np.integer):
        raise InputError(f"a piano roll holds uint8 velocities, got dtype {roll.dtype}")
    if int(fps) <= 0:
        raise InputError(f"roll fps must be positive, got {fps}")


def _frame_step(frame: int, fps: int) -> int:
    return int(round(frame * STEPS_PER_SECOND / fps))


def _step_frame(step: int, fps: int) -> int:
    return int(round(step * fps / STEPS_PER_SECOND))


# ----------------------------------------------------------------------------- public API


def roll_to_events(roll: np.ndarray, fps: int) -> list[int]:
    """uint8 roll (2, 128, F) at ``fps`` frames/s -> events ending with END at the roll's end
    (leading and trailing silence kept as shifts)."""
    _check_roll(roll, fps)
    end = _frame_step(roll.shape[2], fps)
    notes: list[_Note] = []
    last: dict[int, int] = {}  # pitch -> index in notes of its latest note
    for p, a, b, v in sorted(_roll_notes(roll), key=lambda n: (n[1], n[0])):
        on = _frame_step(a, fps)
        off = max(_frame_step(b, fps), on + 1)
        if p in last and notes[last[p]].off > on:  # onsets of one pitch quantised together (fps > 100)
            notes[last[p]] = notes[last[p]]._replace(off=on)  # zero length: dropped below
        last[p] = len(notes)
        notes.append(_Note(p, on, off, velocity_bin(v)))
    return _notes_to_events([n for n in notes if n.off > n.on], end)


def events_to_roll(events: Sequence[int], fps: int, max_frames: int | None = None) -> np.ndarray:
    """Events -> uint8 roll (2, 128, F) at ``fps``; stops at END (F is its time, or the last note's end
    without one), releases notes still sounding; ``max_frames`` caps F."""
    if int(fps) <= 0:
        raise InputError(f"roll fps must be positive, got {fps}")
    notes, end = _events_to_notes(events)
    n_frames = _step_frame(end, fps)
    if max_frames is not None:
        n_frames = min(n_frames, int(max_frames))
    roll = empty_roll(n_frames)  # (2, pitch, frame)
    for n in notes:
        a = _step_frame(n.on, fps)
        if a >= n_frames:
            continue
        b = max(_step_frame(n.off, fps), a + 1)
        v = np.uint8(bin_velocity(n.bin))
        seg = roll[0, n.pitch, a:b]
        np.maximum(seg, v, out=seg)
        roll[1, n.pitch, a] = max(roll[1, n.pitch, a], v)
    return roll


def token_steps(events: Sequence[int]) -> np.ndarray:
    """Time steps each event advances: (N,) int64, 0 for all but TIME_SHIFTs (vectorised ``shift_steps``)."""
    k = np.asarray(events, np.int64) - SHIFT_BASE
    return np.where((k >= 0) & (k < MAX_SHIFT), k + 1, 0)


def held_before(events: Sequence[int]) -> np.ndarray:
    """Pitches sounding before each event and after the last: (N + 1, 128) bool, row i before ``events[i]``
    (a pitch sounds from its NOTE_ON to its NOTE_OFF; END releases all), vectorised over the piece."""
    e = np.asarray(events, np.int64)
    n = len(e)
    when = np.arange(1, n + 1)[:, None]  # (N, 1)

    def last(base: int) -> np.ndarray:  # (N, 128): 1 + the latest index <= i of that pitch's event, or 0
        k = e - base
        hit = np.zeros((n, N_PITCHES), np.int64)
        ok = np.flatnonzero((k >= 0) & (k < N_PITCHES))
        hit[ok, k[ok]] = ok + 1
        return np.maximum.accumulate(hit, axis=0) if n else hit

    ended = np.maximum.accumulate(np.where(e == END, when[:, 0], 0))[:, None] if n else np.zeros((0, 1), np.int64)
    after = last(NOTE_ON_BASE) > np.maximum(last(NOTE_OFF_BASE), ended)  # (N, 128) after each event
    return np.concatenate([np.zeros((1, N_PITCHES), bool), after])


def event_clock(events: Sequence[int]) -> np.ndarray:
    """(N + 1,) int64: the time steps of ``events[:i]`` at row i (the clock before each event, then after the
    last)."""
    return np.concatenate([[0], np.cumsum(token_steps(events))]).astype(np.int64)


def events_steps(events: Sequence[int]) -> int:
    """Time steps of music the events span (their time shifts up to END)."""
    steps = 0
    for tok in events:
        if tok == END:
            break
        steps += shift_steps(int(tok))
    return steps


def events_seconds(events: Sequence[int]) -> float:
    """Seconds of music the events span (their time shifts up to END)."""
    return events_steps(events) / STEPS_PER_SECOND


def transpose(events: Sequence[int], semitones: int) -> list[int] | None:
    """Every NOTE_ON/NOTE_OFF moved by ``semitones``; None when a pitch would leave 0..127."""
    out = []
    for tok in events:
        tok = int(tok)
        if is_note_on(tok) or is_note_off(tok):
            base = NOTE_ON_BASE if is_note_on(tok) else NOTE_OFF_BASE
            p = tok - base + semitones
            if not 0 <= p < N_PITCHES:
                return None
            tok = base + p
        out.append(tok)
    return out


def stretch_window(events: Sequence[int], factor: float, steps_before: int = 0) -> list[int]:
    """Tempo augmentation of a window cut from a piece, in time linear in the window: every TIME_SHIFT
    rescaled by ``factor`` on the piece's own time line (the window starts ``steps_before`` steps in, so the
    windows of one piece agree), at least one step each (no two times merge: order, note lengths >= 1 step
    and END stay as they were), split past 1 s.  Other events are unchanged."""
    if not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"a stretch factor is a positive number, got {factor}")
    out, t, mapped = [], int(steps_before), int(round(steps_before * factor))
    for tok in events:
        tok = int(tok)
        n = shift_steps(tok)
        if n == 0:
            out.append(tok)
            continue
        t += n
        target = max(int(round(t * factor)), mapped + 1)
        out.extend(_shifts(target - mapped))
        mapped = target
    return out


MIDI_TICKS_PER_BEAT = 500  # at 120 bpm one MIDI tick is 1 ms
MIDI_TEMPO = 500_000  # us per beat


def events_to_midi(events: Sequence[int], path: str | Path, program: int = 0) -> Path:
    """Write the events as a one-track MIDI file (120 bpm, 1 ms ticks, GM ``program``), atomically."""
    notes, end = _events_to_notes(events)
    ms = 1000 // STEPS_PER_SECOND  # MIDI ticks per step
    timed = [(n.on * ms, 1, mido.Message("note_on", note=n.pitch, velocity=bin_velocity(n.bin))) for n in notes]
    timed += [(n.off * ms, 0, mido.Message("note_off", note=n.pitch, velocity=0)) for n in notes]
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO, time=0))
    track.append(mido.Message("program_change", program=int(program), time=0))
    now = 0
    for tick, _, msg in sorted(timed, key=lambda e: (e[0], e[1], e[2].note)):  # offs before ons at a tick
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end * ms - now)))
    mid = mido.MidiFile(type=0, ticks_per_beat=MIDI_TICKS_PER_BEAT)
    mid.tracks.append(track)
    path = Path(path)
    with atomic_path(path, suffix=".mid") as tmp:
        mid.save(str(tmp))
    return path


def midi_to_events(path: str | Path, fps: int = ROLL_FPS) -> list[int]:
    """Events of a MIDI file (``pipeline.corpus.midi`` rules: tempo map, pedal, drums left out) through its
    roll at ``fps``; ``MidiError`` for unusable files."""
    return roll_to_events(piano_roll(read_midi(path), fps=fps), fps)


# ----------------------------------------------------------------------------- dataset summary


def dataset_events(data_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {genre: {"pieces", "events", "seconds"}}} of a dataset's scored tracks."""
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    fps = int(manifest.get("roll_fps", 100))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for t in manifest["tracks"]:
        if not t.get("roll"):
            continue
        events = roll_to_events(load_npy(data_dir / t["roll"]), fps)
        row = out.setdefault(t["split"], {}).setdefault(t["genre"], {"pieces": 0, "events": 0, "seconds": 0.0})
        row["pieces"] += 1
        row["events"] += len(events)
        row["seconds"] += events_seconds(events)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.corpus.score_events",
                                 description="Event counts and seconds of a dataset's scores, per split and genre.")
    ap.add_argument("--data", required=True, help="a dataset folder (manifest.json, rolls/)")
    args = ap.parse_args(argv)
    try:
        table = dataset_events(args.data)
    except StrataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'split':<6} {'genre':<14} {'pieces':>6} {'events':>8} {'seconds':>8} {'events/s':>8}")
    for split in sorted(table):
        for genre, row in sorted(table[split].items()):
            rate = row["events"] / row["seconds"] if row["seconds"] else 0.0
            print(f"{split:<6} {genre:<14} {row['pieces']:>6} {row['events']:>8} {row['seconds']:>8.1f} {rate:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
