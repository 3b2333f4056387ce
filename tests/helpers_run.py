"""Tiny untrained run folders for generation tests (no training: random stages saved as a run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import config_from_dict, save_config

GENRES = ["chorale", "folk"]


def tiny_config(rates=(1000, 2000), end_class: bool = False, use_roll: bool = True,
                max_seconds: float = 3.0, history: bool = False, stage0: dict | None = None):
    """Two tiny stages (rates 1000/2000 Hz, roll_fps 100); ``stage0``: more keys of stage 0's config."""
    widths = dict(residual_channels=8, gate_channels=16, skip_channels=16, dilation_cycles=1,
                  cycle_length=4, use_roll=use_roll, crop=200, batch_size=2,
                  conditioning={"channels": 8, "layers": 2, "lookahead": 2})
    s0 = dict(widths, end_class=end_class, **(stage0 or {}))
    if history:
        s0["history"] = {"enabled": True, "pool": 10, "channels": 8, "layers": 2}
    raw = {"data": {"rates": list(rates), "roll_fps": 100},
           "stages": [s0] + [dict(widths) for _ in rates[1:]],
           "generate": {"seconds": 0.2, "max_seconds": max_seconds, "chunk": 256}}
    return config_from_dict(raw)


def perturb(stage, seed: int, scale: float = 0.3) -> None:
    """Add seeded noise to every parameter so that every conditioning path has an effect
    (zero-initialised embeddings or output layers would hide genre, roll and guidance)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def head_bias(stage, classes: int):
    """The final bias over the output classes (the last bias with classes (+1) entries)."""
    found = [p for n, p in stage.named_parameters() if n.endswith("bias") and p.ndim == 1
             and p.shape[0] in (classes, classes + 1)]
    if not found:
        raise AssertionError("no output bias found in the stage")
    return found[-1]


def make_run(root: Path, cfg=None, genres=GENRES, seed: int = 0, end_bias: float | None = None) -> Path:
    """Write ``root/run`` with config.yaml and stages/<k>/ (models.save_stage); returns the run path.

    ``end_bias``: add this to stage 0's END logit bias (a stage that ends pieces early).
    """
    import torch

    from models import build_stage, save_stage

    cfg = cfg or tiny_config()
    run = Path(root) / "run"
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    for k, scfg in enumerate(cfg.stages):
        torch.manual_seed(seed + k)
        stage = build_stage(cfg, k, len(genres))
        perturb(stage, seed + 100 + k)
        if k == 0 and end_bias is not None:
            with torch.no_grad():
                head_bias(stage, cfg.data.classes)[stage.end_code] += end_bias
        save_stage(stage, run / "stages" / str(k), extra={"genres": list(genres)})
    return run


def write_midi(path: Path, notes=((60, 0.0, 0.4),), tempo_bpm: float = 120.0) -> Path:
    """A one-track MIDI file; notes are (pitch, start_s, end_s)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    ticks = lambda s: int(round(s * 480 * tempo_bpm / 60))  # noqa: E731
    events = []
    for pitch, start, end in notes:
        events += [(ticks(start), mido.Message("note_on", note=pitch, velocity=90)),
                   (ticks(end), mido.Message("note_off", note=pitch, velocity=0))]
    now = 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=t - now))
        now = t
    mid.save(str(path))
    return path


def write_tone(path: Path, seconds: float = 0.3, rate: int = 4000, seed: int = 0) -> Path:
    """A short noisy tone as a WAV prompt."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
    return path
