"""bench/noise_trap.py: the taps' noise gain read from a stage folder, and the pieces' summary."""

from __future__ import annotations

import math

import pytest
import torch

from models import Stage, save_stage
from noise_trap import summary, tap_gains
from tests.helpers_models import stage_cfg


def test_tap_gains_reads_the_own_past_taps(tmp_path):
    st = Stage(stage_cfg(rate=8000, use_tier_below=True, linear_order=4, adaptive_scale=True, end_class=False),
               index=1, n_genres=2, roll_fps=100, classes=256, factor=4)
    st.set_linear_predictor(torch.tensor([1.6, -0.8, 0.0, 0.0]), None)
    save_stage(st, tmp_path / "stages" / "1", extra={"training": {"linear_input_noise": 1.0}})
    (tmp_path / "stages" / "score").mkdir()  # not a stage with taps: skipped
    g = tap_gains(tmp_path)
    assert list(g) == ["1"]
    assert g["1"]["noise_gain"] == pytest.approx(math.sqrt(1 + 1.6**2 + 0.8**2), abs=1e-3)
    assert g["1"]["largest_root"] == pytest.approx(math.sqrt(0.8), abs=1e-3)  # complex pair, |z|^2 = 0.8
    assert g["1"]["training"] == {"linear_input_noise": 1.0}
    assert g["1"]["score_taps"] is None  # a stage without score taps


def test_summary_splits_midi_and_genre_pieces():
    def row(name, noisy, snrs, f1=None):
        r = {"name": name, "noisy_share": noisy, "tier_snr_db": dict(zip(("2000", "8000"), snrs)),
             "bands_db": {"1-2k": -10.0 - noisy, "2-4k": -20.0}}
        return r if f1 is None else {**r, "note_f1": f1}

    s = summary([row("midi-a", 0.0, (25, 30), 0.4), row("midi-b", 0.5, (12, 30), 0.2),
                 row("genre-a-1", 0.25, (21, 22))])
    assert s["midi"]["pieces"] == 2 and s["midi"]["noisy_share_mean"] == 0.25 and s["midi"]["pieces_with_noise"] == 1
    assert s["midi"]["pieces_all_tiers_snr_20db"] == 1 and s["midi"]["tier_snr_db_min"] == 12
    assert s["midi"]["note_f1_mean"] == pytest.approx(0.3) and s["genre"]["note_f1_mean"] is None
    assert s["genre"]["pieces_all_tiers_snr_20db"] == 1 and s["genre"]["bands_db_median"]["1-2k"] == -10.2
    assert summary([row("genre-a-1", 0.0, (30, 30))])["midi"] is None


def test_tap_gains_names_the_score_taps_order(tmp_path):
    st = Stage(stage_cfg(rate=8000, use_tier_below=True, use_roll=True, linear_order=4, adaptive_scale=True,
                         end_class=False, score={"enabled": True, "order": 16}),
               index=1, n_genres=2, roll_fps=100, classes=256, factor=4)
    save_stage(st, tmp_path / "stages" / "1")
    assert tap_gains(tmp_path)["1"]["score_taps"] == 16
