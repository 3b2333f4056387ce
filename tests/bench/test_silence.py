"""bench/silence.py: stage 0's level where a score sounds, for MIDI pieces with and without a genre."""

from __future__ import annotations

import json

import silence
from tests.helpers_run import make_run, write_midi


def test_genre_conditions_the_midi_pieces_and_is_recorded(tmp_path):
    """``--genre`` asks for the genre with each MIDI piece (as a genre-prompted job's score is): the same
    score and seed then give stage 0 another draw, and the JSON says which genre it was."""
    run = make_run(tmp_path)
    (run / "diagnostics_calibration.json").write_text(json.dumps({"flatness_threshold": 0.1}))
    midi = write_midi(tmp_path / "score.mid", notes=((72, 0.0, 1.0), (76, 1.0, 2.0)))
    docs = {}
    for genre in (None, "folk"):
        out = tmp_path / f"{genre}.json"
        argv = ["--run", str(run), "--out", str(out), f"--piece=p:{midi}", "--seconds", "2", "--seeds", "0",
                "--stage0-only"] + (["--genre", genre] if genre else [])
        assert silence.main(argv) == 0
        docs[genre] = json.loads(out.read_text())
    assert docs[None]["genre"] is None and docs["folk"]["genre"] == "folk"
    rows = {g: d["rows"][0] for g, d in docs.items()}
    assert rows[None]["note_windows"] == rows["folk"]["note_windows"] == 2
    assert rows[None]["stage0_dbfs"] != rows["folk"]["stage0_dbfs"]
