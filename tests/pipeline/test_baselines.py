"""pipeline.evaluation.baselines: exact discretized scoring and known answers (periodic, white noise)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import config_from_dict
from pipeline.evaluation.baselines import (
    LinearPredictor,
    adaptive_scale,
    below_features,
    bin_edges,
    decode_table,
    discretized_laplace_bits,
    fine_tier_baselines,
    laplace_interval_prob,
    past_features,
    stage_linear_baseline,
    unigram_bits,
)
from tests.helpers_data import make_dataset, read_manifest


def test_bins_partition_the_line_and_probabilities_sum_to_one():
    e = bin_edges(8)
    assert e.shape == (257,) and np.isneginf(e[0]) and np.isposinf(e[-1]) and np.all(np.diff(e) > 0)
    v = decode_table(8)
    assert np.all((v > e[:-1]) & (v < e[1:]))  # every decoded value lies inside its own bin
    for mu, b in [(0.0, 0.1), (0.3, 1e-5), (-0.99, 0.02), (1.0, 3.0), (0.5, 1e-9)]:
        p = laplace_interval_prob(e[:-1], e[1:], np.full(256, mu), np.full(256, b))
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
    codes = np.arange(256)
    bits = discretized_laplace_bits(codes, np.zeros(256), np.full(256, 0.05), e)
    assert np.sum(2.0 ** -bits) == pytest.approx(1.0, abs=1e-6)  # a complete code


def test_adaptive_scale_uses_only_the_past():
    r = np.abs(np.random.default_rng(0).normal(size=100))
    s = adaptive_scale(r, 0.1, 1e-5, 0.5)
    r2 = r.copy()
    r2[50] = 100.0
    s2 = adaptive_scale(r2, 0.1, 1e-5, 0.5)
    assert s[0] == 0.5 and np.array_equal(s[:51], s2[:51]) and s2[51] > s[51]
    expect = 0.9 * s[10] + 0.1 * r[10]
    assert s[11] == pytest.approx(expect)


def test_feature_windows():
    y = np.arange(1, 11, dtype=float)
    f = past_features(y, np.array([0, 3]), 4)
    assert f.tolist() == [[0, 0, 0, 0], [3, 2, 1, 0]]
    b = below_features(np.arange(1, 6, dtype=float), np.array([0, 5, 9]), 2, 1, 1)  # window t//2-1 .. t//2+1
    assert b.tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 0]]


def test_linear_baseline_on_a_periodic_signal_is_near_zero_bits(tmp_path):
    data = make_dataset(tmp_path / "d", "periodic", rates=(2000, 8000, 16000), seconds=2.0)
    cfg = config_from_dict({})
    m = read_manifest(data)
    for k in range(3):
        res = stage_linear_baseline(data, m, cfg, k, "test")
        assert res["samples"] == 2 * cfg.data.rates[k]
        assert res["bits_per_sample"] < 1.0, (k, res)
    base = fine_tier_baselines(data, m, cfg, "test")
    assert base["linear_ar_bits_per_sample"] < 0.5
    assert 2.0 < base["unigram_bits_per_sample"] < 6.0  # a few dozen distinct codes


def test_white_noise_cannot_be_beaten(tmp_path):
    data = make_dataset(tmp_path / "n", "noise", rates=(2000,), seconds=2.0, splits={"train": 4, "test": 2})
    cfg = config_from_dict({"data": {"rates": [2000]}})
    m = read_manifest(data)
    base = fine_tier_baselines(data, m, cfg, "test")
    assert base["unigram_bits_per_sample"] == pytest.approx(8.0, abs=0.1)
    assert base["linear_ar_bits_per_sample"] > 7.9  # no linear structure to find
    assert stage_linear_baseline(data, m, cfg, 0, "test")["bits_per_sample"] > 7.9


def test_unigram_add_one_smoothing():
    train = [np.zeros(10, np.int64)]
    bits = unigram_bits(train, [np.array([0, 1])], classes=4)
    # p(0) = 11/14, p(1) = 1/14
    assert bits == pytest.approx(-(np.log2(11 / 14) + np.log2(1 / 14)) / 2)


def test_per_phase_fit_uses_the_tier_below():
    """x[t] = below[t // 2] exactly: the below window predicts it, the own past alone does not."""
    rng = np.random.default_rng(1)
    below = rng.integers(0, 256, size=4000)
    x = np.repeat(below, 2)
    lp = LinearPredictor(order=4, factor=2, back=1, ahead=1, use_below=True).fit([(x, below)], max_rows=5000)
    assert lp.track_bits(x, below).mean() < 0.2
    own = LinearPredictor(order=4).fit([(x, None)], max_rows=5000)
    assert own.track_bits(x).mean() > 3.0
