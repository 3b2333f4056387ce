"""pipeline/transcribe.py: the notes of an audio prompt, held into the continuation."""

from __future__ import annotations

import numpy as np

from pipeline.transcribe import prompt_roll

RATE, FPS = 16000, 100


def chord(pitches, seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonic tones (decaying harmonics, random phases) of MIDI ``pitches``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for p in pitches:
        f0 = 440.0 * 2 ** ((p - 69) / 12)
        for h in range(1, 6):
            x += 0.6**h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    return 0.5 * x / np.abs(x).max()


def test_a_chord_prompt_is_held_into_the_continuation():
    audio = np.concatenate([chord([60, 67], 0.6), chord([57, 64, 69], 0.8, seed=1)])  # C-G, then A-E-A
    frames = int(1.4 * FPS)
    roll = prompt_roll(audio, RATE, FPS, frames, frames + 300, hold_seconds=2.0)
    assert roll.shape == (2, 128, frames + 300)
    held = set(np.flatnonzero(roll[0, :, frames + 10]))
    assert {57, 64, 69} <= held and not held & {60, 67}  # the last chord, not the first
    assert len(held) <= 6
    early = set(np.flatnonzero(roll[0, :, 30]))
    assert {60, 67} <= early
    assert not roll[0, :, frames + 200:].any()  # held 2 s, then no score
    assert roll[1, 57, 50:80].any() and not roll[1, 57, frames:].any()  # its onset; none while held


def test_silence_gives_no_notes():
    roll = prompt_roll(np.zeros(RATE // 2), RATE, FPS, 50, 150, hold_seconds=1.0)
    assert not roll.any()
