"""bench/score_tier.py (and bench/length_choices.py, which reads it): the share of lengths within the target's range."""

from __future__ import annotations

import numpy as np
import pytest

from score_tier import share_in_range


def test_share_in_range_counts_half_to_twice_the_median_inclusive():
    assert share_in_range(np.array([10.0, 16.0, 32.0, 64.0, 65.0]), 32.0) == pytest.approx(0.6)
    assert share_in_range(np.zeros(0), 32.0) == 0.0
