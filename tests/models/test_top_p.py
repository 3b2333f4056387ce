"""The fused kernel's top-p cut (models/fused_kernel.py ``_top_p``: log-probability buckets, only the
boundary bucket sorted) keeps exactly the classes the full stable sort keeps, and the draw lands where
the reference's ``inverse_cdf`` does, over peaked, flat, tied and masked distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from models.fused_kernel import TOP_P_BUCKETS, _draw, _top_p, _top_p_sorted  # noqa: E402
from models.heads import inverse_cdf  # noqa: E402


def _logits(rng: np.random.Generator, kind: str, c: int = 257) -> np.ndarray:
    if kind == "peaked":
        lg = rng.normal(0, 1, c)
        lg[rng.integers(c)] += 12.0
    elif kind == "flat":  # a narrow span: the buckets narrow with it
        lg = rng.normal(0, 0.05, c)
    elif kind == "uniform":  # every class in one bucket, crowded: the full sort decides
        lg = np.zeros(c)
        lg[rng.integers(c, size=3)] = 0.5
    elif kind == "ties":  # equal probabilities across the cut: class order decides
        lg = np.round(rng.normal(0, 2, c))
    elif kind == "masked":  # -inf classes (END), and a tail beyond exp's range
        lg = rng.normal(0, 4, c)
        lg[rng.integers(c, size=5)] = -np.inf
        lg[rng.integers(c, size=5)] = -900.0
    else:  # the music's: a few likely classes on a long tail
        lg = rng.normal(0, 3, c)
        lg[100:110] += 8.0
    return lg


def _probs(lg: np.ndarray, t: float) -> tuple[np.ndarray, float]:
    v = (lg - lg.max()) / t
    p = np.where(v > -745.0, np.exp(np.maximum(v, -745.0)), 0.0)
    return p, float(p.sum())


@pytest.mark.parametrize("kind", ["peaked", "flat", "uniform", "ties", "masked", "music"])
def test_the_bucketed_cut_keeps_the_classes_of_the_full_sort(kind):
    rng = np.random.default_rng(7)
    scratch, order = np.zeros(TOP_P_BUCKETS), np.zeros(257, np.int64)
    for i in range(300):
        lg = _logits(rng, kind)
        t = [1.0, 0.6, 1.3][i % 3]
        top_p = [0.99, 0.9, 0.5, 0.999, 0.2][i % 5]
        p, total = _probs(lg, t)
        fast, full = p.copy(), p.copy()
        _top_p(lg, lg.max(), t, fast, top_p, total, scratch, order)
        _top_p_sorted(full, top_p, total)
        assert np.array_equal(fast > 0, full > 0), (kind, i)
        assert np.array_equal(fast, full)  # the kept classes keep their probabilities exactly


def test_the_draw_matches_the_reference_inverse_cdf():
    rng = np.random.default_rng(3)
    scratch, order = np.zeros(TOP_P_BUCKETS), np.zeros(257, np.int64)
    probs = np.zeros(257)
    for i in range(400):
        lg = _logits(rng, ["peaked", "ties", "masked", "music"][i % 4])
        u = float(rng.random())
        top_p = [0.99, 0.9, 0.5][i % 3]
        ref = inverse_cdf(torch.from_numpy(lg)[None], 1.0, top_p, torch.tensor([u], dtype=torch.float64))
        assert _draw(lg, 1.0, top_p, u, probs, scratch, order) == int(ref[0])
