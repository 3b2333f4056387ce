"""The piano roll: one owner for its shape, channels, scaling to a model input and frame rate.

Files, plans and scores hold it as uint8 ``(2, 128, F)``: layer 0 the velocity while a note
sounds, layer 1 the velocity on its onset frame, at ``roll_fps`` frames per second.  A stage reads
it as float32 ``(ROLL_CHANNELS, F)``: the two layers stacked, velocities divided by 127
(``roll_input``; models/conditioning.py projects the ``ROLL_CHANNELS`` rows).
"""

from __future__ import annotations

import numpy as np

ROLL_LAYERS = 2  # sounding, onset
PITCHES = 128  # MIDI pitches
ROLL_SHAPE = (ROLL_LAYERS, PITCHES)  # a roll's shape before its frames: (2, 128, F)
ROLL_CHANNELS = ROLL_LAYERS * PITCHES  # 256 rows of the model input
VELOCITY_MAX = 127  # MIDI's largest velocity: 1.0 in the model input
ROLL_FPS = 100  # the default frame rate (``DataConfig.roll_fps``; a run's config may change it)


def empty_roll(frames: int) -> np.ndarray:
    """uint8 ``(2, 128, frames)`` of silence."""
    return np.zeros((ROLL_LAYERS, PITCHES, int(frames)), np.uint8)


def roll_input(roll: np.ndarray) -> np.ndarray:
    """uint8 ``(2, 128, F)`` -> float32 ``(256, F)`` in [0, 1], as the stages read it."""
    r = np.asarray(roll, dtype=np.float32)
    return r.reshape(ROLL_CHANNELS, r.shape[-1]) / np.float32(VELOCITY_MAX)
