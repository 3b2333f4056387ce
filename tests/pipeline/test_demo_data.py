"""pipeline.corpus.demo_data: the music21 + FluidSynth demo corpus (small, real renders)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpus.demo_data import DEMO_CSV, Work, build_demo_corpus, load_candidates
from pipeline.corpus.midi import midi_duration, read_midi
from pipeline.errors import ParameterError

pytestmark = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


def test_candidate_list():
    works = load_candidates()
    genres = {}
    for w in works:
        genres.setdefault(w.genre, []).append(w)
    assert {"chorale", "renaissance", "folk", "classical"} <= set(genres)
    for g, ws in genres.items():
        assert len(ws) >= 25, g  # enough for per_genre up to ~20 with some failures
        assert len({w.corpus_path for w in ws}) == len(ws)
        assert len({w.name for w in ws}) == len(ws)  # distinct file names
    assert {w.program for w in genres["chorale"]} == {19}  # church organ
    assert {w.program for w in genres["renaissance"]} == {52}  # choir aahs
    assert all(0 <= w.program < 128 for w in works)
    assert Work("classical", "mozart/k80/movement1.mxl", 48).name == "mozart-k80-movement1"


def _check_pair(out, genre, work: Work, max_seconds):
    wav, mid = out / genre / f"{work.name}.wav", out / genre / f"{work.name}.mid"
    assert wav.is_file() and mid.is_file()
    info = sf.info(wav)
    assert info.samplerate == 16000 and info.channels == 1
    notes = read_midi(mid)
    assert {n.program for n in notes if not n.is_drum} == {work.program}  # the MIDI that was rendered
    end = midi_duration(mid)
    assert end <= max_seconds + 1e-6
    assert end <= info.duration <= end + 1.5 + 1e-3  # aligned at t=0, release tail only
    x, sr = sf.read(wav, dtype="float32")
    assert np.max(np.abs(x)) == pytest.approx(0.9, abs=2e-3)
    first = min(n.start for n in notes)
    assert abs(np.argmax(np.abs(x) > 0.02) / sr - first) < 0.1  # sound starts with the first note


def test_build_two_genres_and_rerun(tmp_path):
    out = tmp_path / "demo"
    summary = build_demo_corpus(out, per_genre=1, genres=["chorale", "folk"], max_seconds=15.0,
                                progress=False, workers=2)
    assert set(summary["genres"]) == {"chorale", "folk"}
    assert summary["tracks"] == 2 and summary["skipped"] == []
    works = {w.genre: w for w in reversed(load_candidates()) if w.genre in ("chorale", "folk")}
    for genre, work in works.items():  # the first candidate of each genre, in CSV order
        assert summary["genres"][genre] == {"tracks": 1, "minutes": pytest.approx(
            sf.info(out / genre / f"{work.name}.wav").duration / 60, abs=0.01), "new": 1}
        _check_pair(out, genre, work, 15.0)
    assert sorted(p.name for p in out.iterdir()) == ["chorale", "folk"]
    assert not list(out.rglob(".*"))  # no temporaries left

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    t0 = time.time()
    again = build_demo_corpus(out, per_genre=1, genres=["chorale", "folk"], max_seconds=15.0,
                              progress=False, workers=2)
    assert time.time() - t0 < 5.0
    assert again["tracks"] == 2 and all(g["new"] == 0 for g in again["genres"].values())
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps  # kept as they were


def test_failures_are_skipped_and_reported(tmp_path, capsys):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "genre,corpus_path,program\n"
        "chorale,bach/no_such_chorale.mxl,19\n"
        "chorale,bach/bwv66.6.mxl,20\n"
    )
    out = tmp_path / "demo"
    summary = build_demo_corpus(out, per_genre=1, max_seconds=8.0, workers=1, candidates=csv_path)
    assert summary["tracks"] == 1 and summary["genres"]["chorale"]["new"] == 1
    assert [s["corpus_path"] for s in summary["skipped"]] == ["bach/no_such_chorale.mxl"]
    assert summary["skipped"][0]["reason"]
    _check_pair(out, "chorale", Work("chorale", "bach/bwv66.6.mxl", 20), 8.0)
    assert not (out / "chorale" / "bach-no_such_chorale.wav").exists()
    printed = capsys.readouterr().out
    assert "bach/no_such_chorale.mxl: skipped" in printed and "bach-bwv66.6.wav" in printed
    assert "chorale: 1 tracks" in printed


def test_bad_arguments(tmp_path):
    with pytest.raises(ParameterError, match="unknown genre"):
        build_demo_corpus(tmp_path, genres=["polka"], progress=False)
    with pytest.raises(ParameterError, match="per_genre"):
        build_demo_corpus(tmp_path, per_genre=0, progress=False)
    (tmp_path / "bad.csv").write_text("name,path\nx,y\n")
    with pytest.raises(ParameterError, match="genre,corpus_path,program"):
        build_demo_corpus(tmp_path, candidates=tmp_path / "bad.csv", progress=False)
    assert DEMO_CSV.is_file()


def test_no_fluidsynth_is_one_error_before_any_work(tmp_path, monkeypatch):
    from pipeline.corpus.midi import MidiError

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MidiError, match="fluidsynth not found on PATH"):
        build_demo_corpus(tmp_path / "demo", per_genre=1, genres=["chorale"], progress=False)
    assert not (tmp_path / "demo").exists()  # not one skipped work per candidate


def test_another_soundfont_than_the_preferred_is_said(tmp_path, monkeypatch, capsys):
    import pipeline.corpus.midi as midi

    tim = next((d / "TimGM6mb.sf2" for d in map(Path, midi.SOUNDFONT_DIRS) if (d / "TimGM6mb.sf2").is_file()), None)
    if tim is None:
        pytest.skip("needs TimGM6mb.sf2 (make system-deps)")
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    (fonts / tim.name).symlink_to(tim)
    monkeypatch.setattr(midi, "SOUNDFONT_DIRS", [str(fonts)])
    monkeypatch.delenv("STRATA_SOUNDFONT", raising=False)
    summary = build_demo_corpus(tmp_path / "demo", per_genre=1, genres=["folk"], max_seconds=4.0, progress=False,
                                workers=1)
    assert summary["soundfont"] == str(fonts / tim.name) and summary["tracks"] == 1
    (line,) = summary["warnings"]
    assert "FluidR3_GM.sf2 not found" in line and str(fonts / tim.name) in line
    assert capsys.readouterr().err.strip().splitlines() == [line]
