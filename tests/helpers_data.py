"""Tiny dataset folders written directly in the manifest format (docs/ARCHITECTURE.md), from numpy
signals, so training/evaluation tests do not depend on preprocessing.

Kinds:
- ``periodic``: one waveform with a period of 32 samples at the fine rate (every tier is periodic,
  period 32 * r_k / r_K); each track starts at a different phase, a multiple of r_K / r_0 fine
  samples, so the tiers relate to each other the same way in every track.
- ``noise``: codes uniform over all classes at the fine rate (the coarser tiers, made by
  resampling, are not uniform; use a single-rate dataset for "uniform at every tier").
- ``logistic``: the chaotic logistic map x <- 3.9 x (1 - x) at the fine rate, one seeded start per track:
  each sample a nearly exact nonlinear function of the one before, nearly uncorrelated with it, so a
  linear predictor does little better than the marginal and a network that learns does far better.
Rolls: ``"zeros"`` (a roll of silence), ``"notes"`` (random notes) or ``None`` (no roll file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.config import DataConfig, config_to_dict
from pipeline.corpus.audio import make_tiers, mulaw_decode
from pipeline.io import atomic_save_npy, atomic_write_json

PERIOD = 32  # fine-rate samples


def periodic_signal(n: int, phase: int = 0) -> np.ndarray:
    """float32 (n,): a period-32 waveform (fundamental + third harmonic)."""
    t = np.arange(phase, phase + n)
    w = 2 * np.pi * t / PERIOD
    return (0.5 * np.sin(w) + 0.2 * np.sin(3 * w + 0.3)).astype(np.float32)


def noise_signal(n: int, rng: np.random.Generator, bits: int = 8) -> np.ndarray:
    """float32 (n,) whose mu-law codes are uniform over all classes."""
    return mulaw_decode(rng.integers(0, 2**bits, size=n), bits)


def logistic_signal(n: int, rng: np.random.Generator, r: float = 3.9) -> np.ndarray:
    """float32 (n,) in [-0.8, 0.8]: the logistic map from a random start (after 100 warm-up steps)."""
    x = float(rng.uniform(0.2, 0.8))
    out = np.empty(n + 100)
    for i in range(n + 100):
        x = r * x * (1.0 - x)
        out[i] = x
    return (1.6 * (out[100:] - 0.5)).astype(np.float32)


def random_roll(n_frames: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """uint8 (2, 128, F): zeros, or random notes (velocity while sounding, onset channel)."""
    roll = np.zeros((2, 128, n_frames), np.uint8)
    if kind == "notes":
        f = 0
        while f < n_frames:
            length = int(rng.integers(5, 40))
            pitch, vel = int(rng.integers(48, 84)), int(rng.integers(40, 127))
            roll[0, pitch, f : f + length] = vel
            roll[1, pitch, f] = vel
            f += length
    return roll


def make_dataset(
    root: str | Path,
    kind: str = "periodic",
    rates: Sequence[int] = (2000, 8000, 16000),
    seconds: float = 2.0,
    splits: dict[str, int] | None = None,
    genres: Sequence[str] = ("alpha", "beta"),
    roll: str | None = "zeros",
    roll_fps: int = 100,
    seed: int = 0,
) -> Path:
    """Write ``root/manifest.json`` + ``tiers/<rate>/<id>.npy`` (+ ``rolls/<id>.npy``); return root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 4, "valid": 1, "test": 1}
    genres = sorted(genres)
    rates = sorted(int(r) for r in rates)
    fine = rates[-1]
    data_cfg = DataConfig(rates=tuple(rates), roll_fps=roll_fps)
    tracks = []
    i = 0
    for split, count in splits.items():
        for _ in range(count):
            n = int(seconds * fine)
            step = fine // rates[0]
            if kind == "periodic":
                audio = periodic_signal(n, phase=step * int(rng.integers(0, PERIOD)))
            elif kind == "logistic":
                audio = logistic_signal(n, rng)
            else:
                audio = noise_signal(n, rng)
            tiers = make_tiers(audio, rates)
            genre = genres[i % len(genres)]
            tid = f"{genre}-{kind}-{i:03d}"
            entry = {
                "id": tid, "genre": genre, "genre_id": genres.index(genre), "split": split,
                "seconds": len(tiers[fine]) / fine, "source": f"/synthetic/{tid}.wav",
                "hash": f"{seed:04d}{i:060d}", "midi": None,
                "tiers": {}, "samples": {}, "roll": None,
            }
            for r, codes in tiers.items():
                rel = f"tiers/{r}/{tid}.npy"
                atomic_save_npy(root / rel, codes.astype(np.uint8))
                entry["tiers"][str(r)] = rel
                entry["samples"][str(r)] = int(len(codes))
            if roll is not None:
                n_frames = -(-len(tiers[rates[0]]) * roll_fps // rates[0])
                rel = f"rolls/{tid}.npy"
                atomic_save_npy(root / rel, random_roll(n_frames, rng, roll))
                entry["roll"] = rel
                entry["midi"] = f"/synthetic/{tid}.mid"
            tracks.append(entry)
            i += 1
    manifest = {
        "version": 1, "config": config_to_dict(data_cfg), "rates": rates, "classes": data_cfg.classes,
        "roll_fps": roll_fps, "genres": list(genres), "tracks": tracks,
    }
    atomic_write_json(root / "manifest.json", manifest)
    atomic_write_json(root / "report.json", {"skipped": []})
    return root


def read_manifest(root: str | Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def tiny_train_config(rates: Sequence[int] = (1000, 2000), max_steps: int = 40, end_class: bool = True,
                      history: bool = True, use_roll: bool = True, crop: int = 200, batch_size: int = 4,
                      lr: float = 0.01, **train):
    """A tiny trainable cascade (seconds on a CPU) for tests; ``train`` overrides TrainConfig fields."""
    from pipeline.config import config_from_dict

    st = dict(residual_channels=16, gate_channels=16, skip_channels=16, dilation_cycles=1, cycle_length=5,
              use_roll=use_roll, crop=crop, batch_size=batch_size, max_steps=max_steps,
              conditioning={"channels": 8, "layers": 2, "lookahead": 2})
    s0 = dict(st, end_class=end_class)
    if history:
        s0["history"] = {"enabled": True, "pool": 10, "channels": 8, "layers": 2}
    t = dict(lr=lr, warmup_steps=5, eval_every=20, checkpoint_every=20, log_every=5, eval_batches=2)
    t.update(train)
    score_tier = dict(n_layers=1, n_heads=2, width=16, context=32, dropout=0.0, batch_size=4, max_steps=max_steps)
    return config_from_dict({"data": {"rates": list(rates), "roll_fps": 100},
                             "stages": [s0] + [dict(st) for _ in rates[1:]], "train": t, "score_tier": score_tier})
