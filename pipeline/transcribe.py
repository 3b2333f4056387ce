"""A rough score of an audio prompt: the notes sounding in it, as a piano roll.

Continuing an audio prompt without a MIDI file, stage 0 would have no score at all, and its
score-informed taps (models/score.py) would be off: the continuation loses the prompt's pitches
at the first frame.  Here the prompt's sounding notes are estimated from its constant-Q spectrum
(one bin per semitone: local maxima within ``top_db`` of the frame's loudest, at most ``max_notes``),
and the notes of its last ``tail_seconds`` are held for ``hold_seconds`` into the continuation,
so the continuation starts from the prompt's harmony.  It is an estimate, not a transcription:
octave and harmonic confusions only add poles at harmonics that sound anyway.
"""

from __future__ import annotations

import numpy as np

MIDI_LO, MIDI_HI = 24, 108  # C1 .. B7: the CQT's semitone bins
HOP = 512  # CQT hop at the analysis rate


def note_salience(audio: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Magnitude in dB per semitone (MIDI_LO..MIDI_HI-1) and CQT frame: ((P, N), seconds per frame)."""
    import warnings

    import librosa

    nyq_pitch = int(np.floor(69 + 12 * np.log2(0.45 * rate / 440.0)))  # highest bin below ~Nyquist
    n_bins = max(12, min(MIDI_HI, nyq_pitch) - MIDI_LO)
    with warnings.catch_warnings():  # short prompts: librosa warns that its low octaves' filters are long
        warnings.simplefilter("ignore", UserWarning)
        c = np.abs(librosa.cqt(audio.astype(np.float32), sr=rate, hop_length=HOP, n_bins=n_bins,
                               bins_per_octave=12, fmin=librosa.midi_to_hz(MIDI_LO)))
    return librosa.amplitude_to_db(c, ref=1.0, top_db=None), HOP / rate


def frame_notes(db: np.ndarray, top_db: float, max_notes: int, floor_db: float = -60.0) -> np.ndarray:
    """(P, N) dB -> (P, N) velocity in 0..127: per frame, local maxima within top_db of the loudest."""
    vel = np.zeros(db.shape, np.uint8)
    peak = db.max(axis=0)  # (N,)
    is_max = np.zeros(db.shape, bool)
    is_max[1:-1] = (db[1:-1] >= db[:-2]) & (db[1:-1] >= db[2:])
    for j in range(db.shape[1]):
        if peak[j] < floor_db:
            continue
        cand = np.flatnonzero(is_max[:, j] & (db[:, j] >= peak[j] - top_db))
        cand = cand[np.argsort(db[cand, j])[::-1][:max_notes]]
        vel[cand, j] = np.clip(127 + 3 * (db[cand, j] - peak[j]), 1, 127).astype(np.uint8)
    return vel


def prompt_roll(audio: np.ndarray, rate: int, fps: int, prompt_frames: int, total_frames: int,
                hold_seconds: float, tail_seconds: float = 0.25, top_db: float = 20.0,
                max_notes: int = 6) -> np.ndarray:
    """uint8 roll (2, 128, total_frames): the prompt's estimated notes over its first
    ``prompt_frames`` frames, then its last ``tail_seconds``' notes held for ``hold_seconds``."""
    roll = np.zeros((2, 128, total_frames), np.uint8)
    db, frame_s = note_salience(audio, rate)
    vel = frame_notes(db, top_db, max_notes)  # (P, N)
    n = vel.shape[1]
    src = np.minimum((np.arange(prompt_frames) / fps / frame_s).astype(int), n - 1)  # CQT frame of each
    roll[0, MIDI_LO:MIDI_LO + vel.shape[0], :prompt_frames] = vel[:, src]
    tail = vel[:, max(0, n - max(1, int(round(tail_seconds / frame_s)))):]  # (P, n_tail)
    held = np.where((tail > 0).mean(axis=1) >= 0.5, tail.max(axis=1), 0).astype(np.uint8)  # in most of the tail
    end = min(total_frames, prompt_frames + int(round(hold_seconds * fps)))
    roll[0, MIDI_LO:MIDI_LO + vel.shape[0], prompt_frames:end] = held[:, None]
    onset = roll[0] > 0
    onset[:, 1:] &= ~(roll[0, :, :-1] > 0)
    roll[1] = np.where(onset, roll[0], 0)
    return roll
