"""bench/recordings.py --scores: genres of music21 works the demo never uses, rendered beside their MIDI."""

from __future__ import annotations

import shutil

import mido
import pytest
import soundfile as sf

import recordings

needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


@needs_fluidsynth
def test_score_genres_are_rendered_works_the_demo_never_uses(tmp_path):
    from pipeline.corpus.demo_data import load_candidates
    from pipeline.corpus.midi import is_excerpt, read_midi

    demo = load_candidates()
    program = next(w.program for w in demo if w.genre == "chorale")
    out = recordings.build_scores(tmp_path, {"chorale": "bach"}, works=2, seconds=6.0, soundfont="TimGM6mb.sf2")
    assert out["genres"] == {"chorale": {"composer": "bach", "tracks": 2}} and out["soundfont"] == "TimGM6mb.sf2"
    wavs = sorted((tmp_path / "chorale").glob("*.wav"))
    assert len(wavs) == 2 and all(w.with_suffix(".mid").is_file() for w in wavs)
    demo_names = {w.name for w in demo}
    assert not {w.stem for w in wavs} & demo_names  # none of them a demo track
    for w in wavs:
        mid = w.with_suffix(".mid")
        notes = read_midi(mid)
        assert notes and max(n.end for n in notes) <= 6.0 + 1e-6  # the first --score-seconds
        assert {m.program for t in mido.MidiFile(str(mid)).tracks for m in t if m.type == "program_change"} == {program}
        assert is_excerpt(mid)  # a chorale is longer than 6 s: cut, and marked so
        assert 5.0 <= sf.info(str(w)).duration <= 9.0  # 6 s and the release tail
    again = recordings.build_scores(tmp_path, {"chorale": "bach"}, works=2, seconds=6.0, soundfont="TimGM6mb.sf2")
    assert again["genres"]["chorale"]["tracks"] == 2 and len(list((tmp_path / "chorale").glob("*.wav"))) == 2
