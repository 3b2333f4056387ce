"""bench/score_sampling.py: the novelty rule that decides which sampling settings may be chosen."""

from __future__ import annotations

import pytest

from score_sampling import summary


def _row(unseen, copy, style_train, style_heldout):
    return {"unseen_transitions": unseen, "longest_copy_seconds": copy,
            "style_train": {"mean": style_train}, "style_heldout": {"mean": style_heldout, "polyphony": 0.5}}


def test_summary_excuses_only_the_exempt_genres_unseen_share():
    rows = {"folk": _row(0.1, 2.0, 0.8, 0.7), "chorale": _row(0.9, 1.0, 0.6, 0.5)}
    assert summary(rows, {"folk"})["novelty_targets_met"] is True
    assert summary(rows, set())["novelty_targets_met"] is False  # folk's 0.1 unseen counts
    s = summary(rows, {"folk"})
    assert s["style_train_mean"] == pytest.approx(0.7) and s["style_heldout_mean"] == pytest.approx(0.6)
    assert s["longest_copy_seconds"] == 2.0


def test_summary_never_excuses_a_long_copy():
    rows = {"folk": _row(0.1, 3.5, 0.8, 0.7), "chorale": _row(0.9, 1.0, 0.6, 0.5)}
    assert summary(rows, {"folk"})["novelty_targets_met"] is False
