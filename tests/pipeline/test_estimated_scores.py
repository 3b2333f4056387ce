"""Estimated scores at preprocess (issue 20): a track without MIDI gets a roll from its audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, config_from_dict, load_config
from pipeline.corpus import preprocess as pp
from pipeline.corpus.manifest import genres_without_score, roll_counts, unscored_genre_lines, write_dataset
from pipeline.io import load_npy
from tests.pipeline.test_preprocess import write_midi, write_wav
from tests.pipeline.test_transcribe import MELODY, RATE, tones

CFG = load_config("tiny")


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """White noise: no pitch for any estimator to find."""
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def corpus(raw: Path) -> dict[str, Path]:
    """A melody without MIDI, the same melody with its MIDI, and noise without MIDI."""
    files = {"melody": write_wav(raw / "recorded" / "melody.wav", tones(MELODY, 6.0), RATE),
             "scored": write_wav(raw / "scored" / "melody.wav", tones(MELODY, 6.0, seed=1), RATE),
             "noise": write_wav(raw / "noisy" / "hiss.wav", noise(3.0), RATE)}
    write_midi(raw / "scored" / "melody.mid", [(p, a, b, 100) for p, a, b in MELODY])
    return files


def run(raw: Path, out: Path, estimate: str | None) -> dict:
    files = corpus(raw)
    inputs = [(files["melody"], "recorded", None), (files["scored"], "scored", raw / "scored" / "melody.mid"),
              (files["noise"], "noisy", None)]
    tracks, skipped = pp.process_all(inputs, out, CFG.data, estimate)
    return write_dataset(out, tracks, skipped, CFG.data)


@pytest.fixture(scope="module")
def estimated(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimated")
    return root / "out", run(root / "raw", root / "out", "basic-pitch")


def by_genre(written: dict) -> dict[str, dict]:
    return {t["genre"]: t for t in written["manifest"]["tracks"]}


def test_a_track_without_midi_gets_an_estimated_roll(estimated):
    out, written = estimated
    t = by_genre(written)["recorded"]
    assert t["roll_source"] == "estimated" and t["midi"] is None
    roll = load_npy(out / t["roll"])
    frames = t["samples"][str(CFG.data.rates[0])] * CFG.data.roll_fps // CFG.data.rates[0]
    assert roll.shape == (2, 128, frames) and roll.dtype == np.uint8
    # the melody's pitches sound in the roll; the tiers' trim moved them by the leading silence (<= 0.2 s)
    found = set(np.flatnonzero(roll[1].any(axis=1)))
    assert {p for p, _, _ in MELODY} <= found
    first = np.flatnonzero(roll[1, 60])[0] / CFG.data.roll_fps
    assert 0.0 <= first <= 0.25


def test_a_midi_track_keeps_its_midi_roll(estimated):
    out, written = estimated
    t = by_genre(written)["scored"]
    assert t["roll_source"] == "midi"
    roll = load_npy(out / t["roll"])
    assert roll[1, 60, int(0.2 * CFG.data.roll_fps)] == 100  # the MIDI's velocity, not an estimate


def test_a_track_with_no_note_found_keeps_its_tiers_and_is_reported(estimated):
    out, written = estimated
    t = by_genre(written)["noisy"]
    assert t["roll"] is None and t["roll_source"] is None
    assert all((out / rel).is_file() for rel in t["tiers"].values())
    report = json.loads((out / "report.json").read_text())
    assert [Path(x["path"]).name for x in report["no_roll"]] == ["hiss.wav"]
    assert "found no note" in report["no_roll"][0]["reason"]
    assert report["counts"]["estimated_rolls"] == 1 and report["counts"]["with_midi"] == 1
    assert report["counts"]["without_roll"] == 1 and report["skipped"] == []
    assert roll_counts(written["manifest"]) == {"midi": 1, "estimated": 1, "none": 1}


def test_without_estimation_only_midi_tracks_have_rolls(tmp_path):
    written = run(tmp_path / "raw", tmp_path / "out", None)
    g = by_genre(written)
    assert g["recorded"]["roll"] is None and g["recorded"]["roll_source"] is None
    assert g["scored"]["roll_source"] == "midi"
    assert written["report"]["no_roll"] == []  # nothing was estimated, so nothing failed
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    for t in manifest["tracks"]:
        t["split"] = "train"
    assert genres_without_score(manifest) == ["noisy", "recorded"]
    lines = unscored_genre_lines(manifest)
    assert len(lines) == 2 and lines[0].startswith("genre 'noisy': no training track has a score")


def test_config_switch_and_its_check():
    assert CFG.preprocess.estimate_scores and CFG.preprocess.estimator == "basic-pitch"
    off = config_from_dict({"preprocess": {"estimate_scores": False}})
    assert off.preprocess.estimator is None
    with pytest.raises(ConfigError, match="preprocess.transcription"):
        config_from_dict({"preprocess": {"transcription": "crepe"}})


def test_resynthesis_without_midi_reads_the_estimated_roll(tmp_path):
    from pipeline.generation.plan import make_plan, validate_params
    from pipeline.run import load_run
    from tests.helpers_run import make_run

    run_dir = make_run(tmp_path)
    run = load_run(run_dir)
    params = lambda **kw: validate_params(run_dir=run_dir, out_dir=tmp_path / "out", **kw)  # noqa: E731
    wav = write_wav(tmp_path / "real.wav", tones(MELODY[:4], 2.2), RATE)
    plan = make_plan(run, params(resynth=wav))
    assert plan.roll_source == "estimated" and plan.roll.shape[2] == plan.n0 // (run.rates[0] // 100)
    assert {60, 62, 64, 65} <= set(np.flatnonzero(plan.roll[1].any(axis=1)))  # the melody, from the audio
    scored = make_plan(run, params(resynth=wav, midi=write_midi(tmp_path / "m.mid", [(60, 0.0, 1.0, 90)])))
    assert scored.roll_source == "midi" and set(np.flatnonzero(scored.roll[1].any(axis=1))) == {60}


def test_a_genre_without_any_score_is_said_at_generate_time(tmp_path):
    from pipeline.generation.plan import make_plan, validate_params
    from pipeline.run import load_run
    from tests.helpers_run import GENRES, make_run

    run_dir = make_run(tmp_path)  # no score_model.json: no genre of this run has a score
    run = load_run(run_dir)

    def plan(**kw):
        return make_plan(run, validate_params(run_dir=run_dir, out_dir=tmp_path / "out", genre=GENRES[0], **kw)
                         .with_run_defaults(run.cfg.generate))

    plain = plan()
    assert plain.roll is None and plain.roll_source is None
    assert plain.score_note.startswith(f"genre '{GENRES[0]}' has no score in this run")
    scored = plan(midi=write_midi(tmp_path / "m.mid", [(60, 0.0, 1.0, 90)]))
    assert scored.score_note is None and scored.roll_source == "midi"
