"""Spectrogram pictures of generated audio (matplotlib Agg, no pyplot state: thread-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.roll import PITCHES, ROLL_FPS, VELOCITY_MAX
from pipeline.io import atomic_path


def stft_db(audio: np.ndarray, rate: int, n_fft: int | None = None, top_db: float = 80.0):
    """Log-magnitude STFT of mono ``(n,)`` audio.

    Returns ``(S_db (F, T), freqs (F,), times (T,))``; ``S_db`` is in dB below the peak,
    clipped at ``-top_db``.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if n_fft is None:  # ~32 ms windows, a power of two
        n_fft = int(2 ** max(6, round(np.log2(0.032 * rate))))
    hop = n_fft // 4
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    n_frames = 1 + (x.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]  # (T, n_fft)
    frames = x[idx] * np.hanning(n_fft)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1)).T  # (F, T)
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    db = np.maximum(db - db.max(), -top_db)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    times = (np.arange(n_frames) * hop + n_fft / 2) / rate
    return db, freqs, times


def plot_spectrogram(
    audio: np.ndarray,
    rate: int,
    path: str | Path,
    roll: np.ndarray | None = None,
    roll_fps: int = ROLL_FPS,
    title: str | None = None,
    roll_title: str = "piano roll (the score)",
) -> Path:
    """Write a PNG: the STFT spectrogram over time, and the piano roll under it when given.

    ``roll``: uint8 ``(2, 128, F)`` (channel 0 = velocity while a note sounds) or ``(128, F)``.
    """
    # local: keeps matplotlib out of `import pipeline.generation.spectrogram` until this runs
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    db, freqs, times = stft_db(audio, rate)
    seconds = max(len(audio) / rate, 1e-3)
    rows = 2 if roll is not None else 1
    fig = Figure(figsize=(10, 3.2 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    mesh = ax.pcolormesh(times, freqs, db, shading="auto", cmap="magma")
    ax.set_ylabel("Hz")
    ax.set_xlim(0, seconds)
    ax.set_title(title or f"spectrogram ({rate} Hz, {seconds:.2f} s)")
    fig.colorbar(mesh, ax=list(axes), label="dB", aspect=30 * rows)  # shared: time axes stay aligned
    if roll is not None:
        _plot_roll(axes[1], roll, roll_fps, roll_title)
        axes[1].set_xlim(0, seconds)
    axes[-1].set_xlabel("time (s)")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_roll(roll: np.ndarray, roll_fps: int, path: str | Path, title: str) -> Path:
    """Write a PNG of a piano roll alone (a score written without audio: ``--score-only``)."""
    # local: keeps matplotlib out of `import pipeline.generation.spectrogram` until this runs
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _plot_roll(ax, roll, roll_fps, title)
    ax.set_xlabel("time (s)")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _plot_roll(ax, roll: np.ndarray, roll_fps: int, title: str) -> None:
    """Piano roll (pitch over time), velocity as brightness, cropped to the used pitches."""
    r = np.asarray(roll)
    if r.ndim == 3:
        r = r[0]  # (128, F) sounding velocity
    used = np.flatnonzero(r.max(axis=1) > 0)
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, PITCHES)
    extent = (0, r.shape[1] / roll_fps, lo - 0.5, hi - 0.5)
    ax.imshow(r[lo:hi], origin="lower", aspect="auto", extent=extent, cmap="Greys", vmin=0, vmax=VELOCITY_MAX,
              interpolation="nearest")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
