"""bench/score_tier.py (and bench/length_choices.py, which reads it): the share of lengths within the target's range,
and the counts of written lengths."""

from __future__ import annotations

import numpy as np
import pytest

from score_tier import MIN_REFERENCE, length_counts, share_in_range


def test_share_in_range_counts_half_to_twice_the_median_inclusive():
    assert share_in_range(np.array([10.0, 16.0, 32.0, 64.0, 65.0]), 32.0) == pytest.approx(0.6)
    assert share_in_range(np.zeros(0), 32.0) == 0.0


def _row(ended: bool, in_range: bool, reference: int, heard: bool | None = None) -> dict:
    row = {"ended_by_end_event": ended, "within_half_to_twice_median": in_range, "reference_pieces": reference,
           "seconds": 30.0, "asked_seconds": 30.0}
    if heard is not None:
        row["within_range_of_heard_genre"] = heard
    return row


def test_length_counts_read_genres_without_a_reference_and_unconditional_pieces_apart():
    rows = [_row(True, True, 120), _row(True, False, 1), _row(True, False, MIN_REFERENCE), _row(False, False, 90)]
    c = length_counts(rows, asked=False)
    assert (c["ended_by_end_event"], c["ended_within_range"], c["of"]) == (3, 1, 4)
    # the genre whose median comes from one whole piece is left out of the reading where a reference exists
    assert (c["ended_within_range_where_reference"], c["of_where_reference"]) == (1, 3)
    assert "ended_within_range_of_heard_genre" not in c and "median_relative_error_of_ended" not in c
    c = length_counts([_row(True, False, 334, heard=True), _row(True, True, 334, heard=False)], asked=True)
    assert c["ended_within_range_of_heard_genre"] == 1 and c["ended_within_10pct_of_asked"] == 2
