"""bench/stage_variants.py: the upsampled tier and the linear path alone, on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import Stage
from models.mulaw import mulaw_values
from pipeline.corpus.audio import mulaw_decode, mulaw_encode, resample
from pipeline.evaluation.assess_metrics import snr_db
from stage_variants import cascade_variants, linear_path_codes, upsampled_codes
from tests.helpers_models import stage_cfg

CLASSES, FACTOR, ORDER = 256, 4, 4


def linear_stage(adaptive: bool, past=None, below=None, bias=0.0, scale=1e-4) -> Stage:
    """A stage 1 (tier below, factor 4) with the given linear taps; the network plays no part."""
    torch.manual_seed(0)
    cfg = stage_cfg(linear_order=ORDER, linear_below=2, adaptive_scale=adaptive, use_tier_below=True)
    st = Stage(cfg, index=1, n_genres=1, factor=FACTOR, roll_fps=100, classes=CLASSES).eval()
    st.set_linear_predictor(torch.zeros(ORDER) if past is None else torch.tensor(past, dtype=torch.float32),
                            below, bias=bias, scale=scale)
    return st


def test_upsampled_codes_interpolate_a_sine():
    t = np.arange(2000) / 2000
    coarse = mulaw_encode(0.5 * np.sin(2 * np.pi * 150 * t))  # 1 s at 2 kHz
    fine = mulaw_decode(upsampled_codes(coarse, 2000, 8000, 8))
    assert fine.shape == (8000,)
    expect = 0.5 * np.sin(2 * np.pi * 150 * np.arange(8000) / 8000)
    assert snr_db(expect[200:-200], fine[200:-200]) > 25  # mu-law 8 bit keeps ~30 dB


def test_linear_path_with_below_taps_on_the_current_sample_holds_the_tier_below():
    # below window = below[t//f - 2 .. t//f + 2]: weight 1 on the centre, every phase -> mu = dec(below[t // 4]);
    # temperature 0: the most likely bin, the one whose centre mu is
    taps = torch.zeros(FACTOR, 5)
    taps[:, 2] = 1.0
    st = linear_stage(adaptive=False, below=taps)
    below = np.random.default_rng(0).integers(60, 200, 50)
    codes = linear_path_codes(st, below, 50 * FACTOR, temperature=0.0, top_p=1.0, tier_prior=0.0, seed=0)
    assert np.array_equal(codes, np.repeat(below, FACTOR))


def test_linear_path_samples_the_logistic_of_its_scale():
    # no taps, mu bias 0.3, scale s: decoded samples have mean 0.3 and mean |deviation| 2 s ln 2
    s = 0.02
    st = linear_stage(adaptive=False, bias=0.3, scale=s)
    codes = linear_path_codes(st, np.full(5000, 128), 20000, temperature=1.0, top_p=1.0, tier_prior=0.0, seed=1)
    v = mulaw_values(CLASSES)[codes]
    assert v.mean() == pytest.approx(0.3, abs=0.005)
    assert np.abs(v - 0.3).mean() == pytest.approx(2 * s * math.log(2), rel=0.15)


def test_linear_path_resonator_keeps_oscillating_at_its_frequency():
    # y[t] = 2 r cos(w) y[t-1] - r^2 y[t-2] driven by the logistic noise: a resonance at w.  Adaptive
    # scale multiplier 0.5 < 1 / (2 ln 2): the noise settles (at 1 / (2 ln 2) it would follow itself)
    w, r = 2 * np.pi * 500 / 8000, 0.98
    st = linear_stage(adaptive=True, past=[2 * r * np.cos(w), -r ** 2, 0.0, 0.0], scale=0.5)
    from scipy.signal import welch

    codes = linear_path_codes(st, np.full(4000, 128), 16000, temperature=1.0, top_p=1.0, tier_prior=0.0, seed=2)
    freqs, power = welch(mulaw_values(CLASSES)[codes][1000:], fs=8000, nperseg=1024)
    assert freqs[np.argmax(power)] == pytest.approx(500, abs=20)  # resonance bandwidth ~ (1 - r) fs / pi = 51 Hz


def test_no_linear_path_is_a_clear_error():
    st = Stage(stage_cfg(use_tier_below=True), index=1, n_genres=1, factor=FACTOR, roll_fps=100, classes=CLASSES)
    with pytest.raises(ValueError, match="no linear path"):
        linear_path_codes(st, np.full(10, 128), 40, temperature=1.0, top_p=1.0, tier_prior=0.0, seed=0)


def test_cascade_variants_share_stage_0_and_replace_one_stage(tmp_path):
    from pipeline.generation.plan import make_plan, validate_params
    from pipeline.run import load_run
    from tests.helpers_run import make_run

    run = load_run(make_run(tmp_path))
    p = validate_params(run_dir=run.path, out_dir=tmp_path / "out", genre="folk", seconds=0.5,
                        seed=3).with_run_defaults(run.cfg.generate)
    v = cascade_variants(run, make_plan(run, p), p)
    assert set(v) == {"stage0", "model", "stage1_upsampled", "stage1_linear"}
    fine, coarse = run.rates[-1], run.rates[0]
    assert all(v[k]["audio"].shape == (int(0.5 * fine),) for k in ("model", "stage1_upsampled", "stage1_linear"))
    # the upsampled variant resampled back is the stage-0 tier (band-limited round trip, mu-law noise)
    back = resample(v["stage1_upsampled"]["audio"], fine, coarse)
    assert snr_db(v["stage0"]["audio"][20:-20], back[20:-20]) > 10  # unrelated audio: about 0 dB
    assert not np.array_equal(v["model"]["audio"], v["stage1_upsampled"]["audio"])
    again = cascade_variants(run, make_plan(run, p), p)  # same seed: the same audio
    assert all(np.array_equal(again[k]["audio"], v[k]["audio"]) for k in v)
