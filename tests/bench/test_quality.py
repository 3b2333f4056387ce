"""bench/quality.py: ``targets`` on hand-made results with known pass / fail, and the provenance helpers."""

from __future__ import annotations

import copy

import pytest

import quality


def hold(share: float) -> dict:
    """One prompt hold's continuation summary with the chroma share given (generated = chance + share * lift)."""
    m = {"generated": 0.5 + share * 0.4, "reference": 0.9, "chance": 0.5, "share": share}
    return {"continuations": 12, "chroma_cosine": m, "key_profile_correlation": dict(m), "same_key": dict(m)}


def results() -> dict:
    """Results that meet every target (each value chosen against its threshold by hand)."""
    s0 = {"index": 0, "bits_per_sample": 3.0, "bits_per_sample_without_roll": 3.6,
          "bits_per_sample_short_context": 3.2, "bits_per_sample_without_genre": 3.05}
    fine = [{"index": k, "bits_per_sample": 2.0, "linear_baseline_bits_per_sample": 2.3,
             "bits_per_sample_without_conditioning": 2.6} for k in (1, 2)]
    return {
        "score_following": {"share": 0.6, "real_share": 0.9},
        "noise": {"generated_share_above": 0.02, "real_share_above": 0.01, "generated_median_flatness": 0.004,
                  "real_median_flatness": 0.003, "generated_sounding_share": 0.9},
        "resynthesis": {"mean_error_db": {"model": 3.0, "stage1_linear": 5.0, "stage2_linear": 4.0,
                                          "stage1_upsampled": 60.0}},
        "evaluation": {"stages": [s0] + fine},
        "end_class": {"unscored": {"count": 10, "ended_within_half_to_twice_median": 8, "ended_by_end_class": 9,
                                   "cap_seconds": 60.0, "median_train_seconds": 40.0},
                      "ranking": {"held_out_without_roll": {"auc": 0.85}}},
        "continuation": {"default_hold": 2.0, "scored_seconds": [2.0, 8.0],
                         "by_hold": {"2": hold(0.55), "0": hold(0.2)}},
        "genre_recognition": {"generated": {"accuracy": 0.5, "clips": 8}, "real_test": {"accuracy": 0.75, "clips": 8},
                              "chance": 0.25, "genres": ["a", "b", "c", "d"], "clip_seconds": 4.0, "train_clips": 96,
                              "by_notes": {"generated": {"accuracy": 0.5, "clips": 8},
                                           "real_test": {"accuracy": 0.7, "clips": 8}}},
    }


def met(res: dict) -> dict[str, bool]:
    return {row["target"].split()[0]: row["met"] for row in quality.targets(res)}


def test_all_targets_met_on_results_that_meet_them():
    rows = quality.targets(results())
    assert {r["target"].split()[0] for r in rows} == {"1", "2", "3", "4", "5", "6", "6b", "7", "8", "8b"}
    assert all(r["met"] for r in rows)
    assert all(r["could_meet"] and {"real", "reference", "chance"} <= set(r) for r in rows)


@pytest.mark.parametrize("path, value, target", [
    (("score_following", "share"), 0.4, "1"),
    (("noise", "generated_share_above"), 0.06, "2"),
    (("noise", "generated_median_flatness"), 0.016, "2"),  # > 5 x 0.003
    (("noise", "generated_sounding_share"), 0.1, "2"),  # mostly silence cannot pass as "no noise"
    (("resynthesis", "mean_error_db", "model"), 4.5, "3"),  # worse than stage 2's linear path (4.0)
    (("evaluation", "stages", 1, "linear_baseline_bits_per_sample"), 2.1, "4"),  # 0.1 bits below: < 0.2
    (("evaluation", "stages", 0, "bits_per_sample_without_roll"), 3.4, "5"),
    (("end_class", "unscored", "ended_within_half_to_twice_median"), 7, "6"),
    (("end_class", "ranking", "held_out_without_roll", "auc"), 0.7, "6b"),
    (("continuation", "by_hold", "2", "chroma_cosine", "share"), 0.45, "7"),
    (("continuation", "by_hold", "2", "key_profile_correlation"), {"share": 0.3}, "7"),
    (("genre_recognition", "generated", "accuracy"), 0.4, "8"),  # (0.4 - 0.25) / (0.75 - 0.25) = 0.3
    (("genre_recognition", "by_notes", "generated", "accuracy"), 0.4, "8b"),  # (0.4 - 0.25) / (0.7 - 0.25) = 0.33
])
def test_each_target_misses_when_its_value_misses(path, value, target):
    res = copy.deepcopy(results())
    node = res
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    flags = met(res)
    assert not flags[target]
    assert all(v for k, v in flags.items() if k != target)  # the others are untouched


def test_missing_measures_never_meet():
    flags = met({})
    assert not any(flags.values())
    res = results()
    res["resynthesis"]["mean_error_db"] = {"model": 1.0}  # no linear variant to beat: not met
    assert not met(res)["3"]


def test_paths_and_command_are_repository_relative():
    assert quality.rel(quality.ROOT / "demo" / "data") == "demo/data"
    assert quality.rel("/elsewhere/on/one/machine/prompt.wav") == "prompt.wav"
    assert quality.rel("demo/run") == "demo/run"
    cmd = quality.command_line(["--data", str(quality.ROOT / "demo" / "data"), "--run", "demo/run", "--seconds", "4"])
    assert cmd == "python bench/quality.py --data demo/data --run demo/run --seconds 4"
    found = quality.relative_paths({"midi": str(quality.ROOT / "demo" / "raw" / "a.mid"), "n": 3,
                                    "list": ["/one/machine/run/diagnostics_calibration.json", "fallback"]})
    assert found == {"midi": "demo/raw/a.mid", "n": 3, "list": ["diagnostics_calibration.json", "fallback"]}
    state = quality.git_state()
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)


def test_quality_table_shows_each_measure_beside_real_reference_and_chance(tmp_path, monkeypatch):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("results_tables", quality.ROOT / "docs" / "results" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    res = results()
    res["stage_decisions"] = {"median_levels": {"model": {"1-2 kHz": -20.0, "2-4 kHz": -30.0, "4-8 kHz": -40.0},
                                                "stage2_upsampled": {"1-2 kHz": -20.0, "2-4 kHz": -30.0,
                                                                     "4-8 kHz": -100.0}},
                              "median_difference_from_model": {"stage2_upsampled": {"1-2 kHz": 0.0, "2-4 kHz": 0.0,
                                                                                    "4-8 kHz": -60.0}},
                              "median_real": {"1-2 kHz": -8.0, "2-4 kHz": -19.0, "4-8 kHz": -45.0}}
    q = {"commit": "a" * 40, "dirty": True, "command": "python bench/quality.py --data demo/data", "warnings": ["w1"],
         "seconds_per_piece": 4.0, "targets": quality.targets(res), **res}
    (tmp_path / "quality.json").write_text(json.dumps(q))
    monkeypatch.setattr(tables, "HERE", tmp_path)
    text = tables.quality_table()
    row1 = next(line for line in text.splitlines() if line.startswith("| 1 MIDI"))
    assert "| 0.6 | 0.9 | 1 | 0 | yes |" in row1  # measured, real audio, reference, chance, met
    row8 = next(line for line in text.splitlines() if line.startswith("| 8 "))
    assert "| 0.5 | 0.75 | - | 0.25 | yes |" in row8
    assert "| stage2 upsampled | -20.0 | -30.0 | -100.0 | +0.0 / +0.0 / -60.0 |" in text
    assert "| real audio (same span) | -8.0 | -19.0 | -45.0 | |" in text
    assert "| held out without roll | - / - | 0.850 | - | - |" in text
    assert "real test clips 0.75 (8 clips), generated 0.50 (8 clips), chance 0.25" in text
    assert "(working tree dirty)" in text and "w1" in text


def test_estimated_roll_dataset_replaces_only_the_test_rolls(tmp_path):
    """The test tracks with MIDI get a roll estimated from their audio (same frames as the MIDI roll) or are listed
    as failed with no roll; every other track and every tier is the dataset's own."""
    import json

    import numpy as np

    from tests.helpers_data import make_dataset, read_manifest
    from tests.helpers_run import make_run, tiny_config

    data = make_dataset(tmp_path / "data", rates=(1000, 2000), seconds=2.0, roll="notes",
                        splits={"train": 2, "valid": 1, "test": 2})
    run = make_run(tmp_path, tiny_config())
    out, replaced, failed = quality.estimated_roll_dataset(data, run, tmp_path / "work")
    assert replaced + len(failed) == 2  # the two test tracks
    before, after = read_manifest(data), json.loads((out / "manifest.json").read_text())
    assert [t["id"] for t in after["tracks"]] == [t["id"] for t in before["tracks"]]
    for old, new in zip(before["tracks"], after["tracks"]):
        for r in new["tiers"].values():
            assert np.array_equal(np.load(out / r), np.load(data / r))
        if old["split"] != "test":
            assert new == old
        elif new["roll"] is None:
            assert any(f.startswith(old["id"]) for f in failed)
        else:
            assert new["roll_source"] == "estimated" and not (out / new["roll"]).is_symlink()  # written, not linked
            assert np.load(out / new["roll"]).shape == np.load(data / old["roll"]).shape
    stages = [{"index": 0, "bits_per_sample": 3.0, "bits_per_sample_without_roll": 3.5,
               "linear_baseline_bits_per_sample": 4.0}]
    bits = quality.estimated_roll_bits({"stages": stages}, {"stages": [{"index": 0, "bits_per_sample": 3.2}]}, 2, [])
    assert bits == {"with_midi_roll": 3.0, "without_roll": 3.5, "with_estimated_roll": 3.2, "linear": 4.0,
                    "replaced": 2, "estimate_failed": []}


def test_noise_is_broken_down_by_genre_against_the_genres_real_audio(tmp_path):
    """Genre-prompted pieces are counted per genre (a MIDI-prompted piece is not), each genre beside its own real
    test tracks; a piece with more than 5% of its sounding windows above the threshold is not clean."""
    from tests.helpers_data import make_dataset

    data = make_dataset(tmp_path / "data", kind="noise", genres=("alpha", "beta"), seconds=3.0,
                        splits={"train": 2, "test": 2})

    def piece(name: str, genre: str, noisy: float, flat: float) -> dict:
        return {"name": name, "genre": genre,
                "diagnostics": {"noise": {"windows": 10, "silent_windows": 0, "noisy_share": noisy,
                                          "flatness_median": flat}}}

    pieces = [piece("genre-alpha", "alpha", 0.0, 0.01), piece("genre-alpha-2", "alpha", 0.2, 0.03),
              piece("genre-beta", "beta", 0.05, 0.02), piece("midi-alpha", "alpha", 1.0, 0.5)]
    out = quality.noise(pieces, data, tmp_path / "run")
    by = out["genre_pieces"]
    assert set(by) == {"alpha", "beta"} and by["alpha"]["pieces"] == 2 and by["beta"]["pieces"] == 1
    assert by["alpha"]["share_above"] == pytest.approx(0.1, abs=1e-9)  # the MIDI piece's windows left out
    assert by["alpha"]["pieces_95pct_windows_clean"] == 1 and by["beta"]["pieces_95pct_windows_clean"] == 1
    assert by["alpha"]["median_flatness"] == pytest.approx(0.02, abs=1e-9)
    assert by["alpha"]["real_tracks"] >= 1 and by["alpha"]["real_median_flatness"] > 0
    assert by["alpha"]["flatness_ratio"] == pytest.approx(0.02 / by["alpha"]["real_median_flatness"], rel=1e-9)
    assert out["pieces"] == 4  # the pooled measure keeps every piece
