"""pipeline/evaluation/score_baselines.py: Kneser-Ney n-grams and the unigram reach known entropy rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.score_baselines import Unigram, fit_ngram, ngram_table

V = 12


def markov_chain(n: int, seed: int) -> tuple[np.ndarray, float, float]:
    """A first-order chain over V states: (sequence, entropy rate, entropy of its stationary law) in bits."""
    rng = np.random.default_rng(123)
    p = rng.dirichlet(np.full(V, 0.3), size=V)  # (V, V) rows: next-state laws, fairly peaked
    w, vecs = np.linalg.eig(p.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    rate = -float(sum(pi[i] * p[i, j] * math.log2(p[i, j]) for i in range(V) for j in range(V) if p[i, j] > 0))
    h0 = -float(sum(q * math.log2(q) for q in pi if q > 0))
    x = np.empty(n, np.int64)
    draw = np.random.default_rng(seed)
    x[0] = draw.choice(V, p=pi)
    u = draw.random(n)
    cum = p.cumsum(1)
    for t in range(1, n):
        x[t] = min(int(np.searchsorted(cum[x[t - 1]], u[t])), V - 1)
    return x, rate, h0


def test_bits_approach_a_markov_chains_entropy_rate():
    train, rate, h0 = markov_chain(60_000, seed=1)
    test, _, _ = markov_chain(10_000, seed=2)
    pieces = [list(train[i:i + 1000]) for i in range(0, len(train), 1000)]  # 60 pieces, as the tier sees them
    table = ngram_table(pieces, [list(test)], V, start=0)
    assert h0 - rate > 0.5  # the chain's memory is worth at least half a bit per event
    assert abs(table["ngram"]["2"] - rate) < 0.03, (table, rate)  # the true model's order: within 0.03 bits
    assert table["ngram"]["3"] < rate + 0.05  # one order too many: backed off to the true order, nearly as good
    for k in ("3", "4", "5"):  # sparser histories cost more, but never beat the truth and stay far from the unigram
        assert rate - 0.02 < table["ngram"][k] < rate + 0.5 * (h0 - rate), (k, table, rate)
    assert abs(table["unigram"] - h0) < 0.03, (table, h0)  # the unigram learns only the stationary law
    assert table["best"] == min(table["ngram"].values()) and table["events"] == 10_000


def test_a_deterministic_cycle_costs_almost_nothing():
    cycle = [3, 7, 1, 4, 4, 9, 2]  # order 2 is ambiguous after 4 ([4] -> 4 or 9); order 3 is exact
    train = [cycle * 200]
    test = [cycle * 20]
    table = ngram_table(train, test, V, orders=(2, 3, 4))
    assert table["ngram"]["3"] < 0.02 and table["ngram"]["4"] < 0.02, table
    assert table["ngram"]["2"] > 2 / 7 * 0.9  # two of seven events follow a 4: a coin flip each
    assert table["best_order"] in (3, 4)


def test_probabilities_sum_to_one_and_unseen_events_stay_possible():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, 6, size=200)) for _ in range(5)]  # events 6..11 never seen
    for order in (1, 2, 3, 5):
        m = fit_ngram(seqs, order, V, start=0)
        for history in ([], [1], [2, 3], [5, 5, 5, 5], [11, 10, 9, 8]):
            total = sum(m.prob(history, w) for w in range(V))
            assert total == pytest.approx(1.0, abs=1e-9), (order, history)
            assert m.prob(history, 11) > 0
    uni = Unigram(seqs, V)
    bits, n = uni.bits([[11]])
    assert n == 1 and bits == pytest.approx(math.log2(1000 + V))  # add-one: (0 + 1) / (N + V)


def test_bad_input():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fit_ngram([[1, 2, V]], 2, V)
    with pytest.raises(ValueError, match="order"):
        fit_ngram([[1, 2]], 0, V)
    with pytest.raises(ValueError, match="no held-out events"):
        ngram_table([[1, 2]], [[]], V)
