"""Spectrograms of several audio files over the same seconds, one above the other (issue 21's side-by-side).

    python bench/side_by_side.py --png docs/results/side_by_side_classical.png --seconds 8 \\
        --audio "plain rendering=demo/run/fine_sampling/renderings/mozart-k156-movement3.wav" \\
        --audio "default=demo/run/fine_sampling/w1p05/midi-classical-255aacea" ...

An ``--audio`` path may be a file or a folder holding one job (its ``*/audio.wav``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def audio_file(path: Path) -> Path:
    """A file as it is; a folder: the one ``audio.wav`` below it."""
    if path.is_file():
        return path
    found = sorted(path.glob("**/audio.wav"))
    if len(found) != 1:
        raise SystemExit(f"--audio {path}: expected a file or a folder with one audio.wav, found {len(found)}")
    return found[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", action="append", required=True, help="LABEL=PATH (repeat; top to bottom)")
    ap.add_argument("--png", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args(argv)
    # local: keeps matplotlib and librosa out of the argument check
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.corpus.audio import load_audio

    items = []
    for spec in a.audio:
        label, sep, path = spec.partition("=")
        if not sep or not label:
            raise SystemExit(f"--audio {spec!r}: expected LABEL=PATH")
        items.append((label, audio_file(Path(path))))
    fig, axes = plt.subplots(len(items), 1, figsize=(10, 3 * len(items)), sharex=True, squeeze=False)
    for ax, (label, path) in zip(axes[:, 0], items):
        y, sr = load_audio(path)
        y = np.asarray(y, np.float32).reshape(-1)[: int(a.seconds * sr)]
        spec = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=256)), ref=np.max)
        librosa.display.specshow(spec, sr=sr, hop_length=256, x_axis="time", y_axis="hz", ax=ax, vmin=-80, vmax=0,
                                 cmap="magma")
        ax.set_title(label)
    fig.tight_layout()
    fig.savefig(a.png, dpi=80)
    print(a.png)


if __name__ == "__main__":
    main()
