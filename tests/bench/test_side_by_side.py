"""bench/side_by_side.py: which file a folder stands for, bad arguments, and the figure written."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from side_by_side import audio_file, main


def _tone(path, seconds=0.5, rate=8000, hz=440.0):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * hz * t), rate)
    return path


def test_a_job_folder_stands_for_its_audio_and_two_are_refused(tmp_path):
    job = tmp_path / "setting" / "job-1"
    job.mkdir(parents=True)
    wav = _tone(job / "audio.wav")
    assert audio_file(tmp_path / "setting") == wav and audio_file(wav) == wav
    (tmp_path / "setting" / "job-2").mkdir()
    _tone(tmp_path / "setting" / "job-2" / "audio.wav")
    with pytest.raises(SystemExit, match="found 2"):
        audio_file(tmp_path / "setting")


def test_the_figure_is_written_and_labels_are_required(tmp_path):
    a, b = _tone(tmp_path / "a.wav"), _tone(tmp_path / "b.wav", hz=880.0)
    png = tmp_path / "side.png"
    main(["--png", str(png), "--seconds", "0.5", "--audio", f"one={a}", "--audio", f"two={b}"])
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        main(["--png", str(png), "--audio", str(a)])
