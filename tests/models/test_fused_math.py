"""models/fused_math.py: exp64 and log64 agree with libm over the ranges the kernel uses (exp64 to 4 ulp,
log64 to 1e-14 relative, or absolute near log 1 = 0)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from models.fused_math import exp64, log64  # noqa: E402


@njit(cache=False)
def _apply(xs, out, log=False):
    for i in range(xs.shape[0]):
        out[i] = log64(xs[i]) if log else exp64(xs[i])


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.abs(got - want) / np.spacing(np.abs(want))


def test_exp64_is_within_4_ulp_of_libm_from_minus_708_to_709():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-708, 709, 200_000), rng.uniform(-40, 40, 200_000),
                         np.array([0.0, -0.0, 1.0, -1.0, 0.5 * np.log(2), -708.0, 709.0])])
    out = np.empty_like(xs)
    _apply(xs, out)
    assert _ulps(out, np.exp(xs)).max() <= 4.0


def test_exp64_clamps_below_minus_708():
    out = np.empty(2)
    _apply(np.array([-745.0, -np.inf]), out)
    np.testing.assert_allclose(out, np.exp(-708.0), rtol=1e-15, atol=0)  # e^-708, not a subnormal


def test_log64_is_within_1e_14_of_libm_for_normal_numbers():
    rng = np.random.default_rng(1)
    xs = np.concatenate([10.0 ** rng.uniform(-300, 300, 200_000), rng.uniform(0.5, 2.0, 200_000),
                         np.array([1.0, 2.0, np.sqrt(2.0), np.sqrt(0.5), 1e-6, 4e-6, np.finfo(np.float64).tiny])])
    out = np.empty_like(xs)
    _apply(xs, out, True)
    want = np.log(xs)
    assert np.all(np.abs(out - want) <= 1e-14 * np.maximum(np.abs(want), 1.0))
    assert out[-7] == 0.0  # log 1
