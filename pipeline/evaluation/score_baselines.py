"""Classic baselines of the score tier over the same events: an add-one unigram and smoothed n-grams.

The n-gram is interpolated modified Kneser-Ney (Chen & Goodman 1998): three discounts per order
(for counts 1, 2 and 3+) estimated from the count-of-counts, continuation counts at the lower
orders, and the uniform distribution over the whole vocabulary below the unigram, so an event
never seen in training still has a probability.  Each sequence is read after ``order - 1`` start
symbols (``start``, the END id by default: the score tier also reads a piece after an END), and
every event of it is scored, its final END included: the same events the score tier predicts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

DEFAULT_ORDERS = (2, 3, 4, 5)


@dataclass
class _Context:
    """Counts of the events after one history, and its count-of-counts (how many events seen 1, 2, 3+ times)."""

    counts: dict[int, int]
    total: int
    n1: int
    n2: int
    n3: int


def _context(counts: Counter) -> _Context:
    values = list(counts.values())
    return _Context(dict(counts), sum(values), sum(v == 1 for v in values), sum(v == 2 for v in values),
                    sum(v >= 3 for v in values))


def _discounts(counts: Sequence[int]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts n1..n4 of one order."""
    n = Counter(min(c, 4) for c in counts)
    n1, n2, n3, n4 = (n[k] for k in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:  # too few counts to estimate them: one plain absolute discount
        return 0.5, 0.75, 0.75
    y = n1 / (n1 + 2 * n2)
    ds = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(max(d, 0.05), k - 0.05) for k, d in zip((1, 2, 3), ds))  # type: ignore[return-value]


@dataclass
class NGram:
    """An interpolated modified Kneser-Ney n-gram over event ids ``0..vocab_size - 1``."""

    order: int
    vocab_size: int
    start: int
    tables: list[dict[tuple[int, ...], _Context]] = field(default_factory=list)  # [k - 1]: histories of k - 1
    discounts: list[tuple[float, float, float]] = field(default_factory=list)

    def prob(self, history: Sequence[int], w: int) -> float:
        """P(w | the last ``order - 1`` events of ``history``)."""
        p = 1.0 / self.vocab_size
        for k in range(1, self.order + 1):
            h = tuple(history[len(history) - (k - 1):]) if k > 1 else ()
            ctx = self.tables[k - 1].get(h)
            if ctx is None:
                continue  # a history never seen: the lower order alone
            d1, d2, d3 = self.discounts[k - 1]
            c = ctx.counts.get(w, 0)
            d = 0.0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3
            gamma = (d1 * ctx.n1 + d2 * ctx.n2 + d3 * ctx.n3) / ctx.total
            p = max(c - d, 0.0) / ctx.total + gamma * p
        return p

    def bits(self, seqs: Sequence[Sequence[int]]) -> tuple[float, int]:
        """(total bits, events scored) of the sequences, every event of each (after start symbols)."""
        total, n = 0.0, 0
        for seq in seqs:
            padded = [self.start] * (self.order - 1) + [int(t) for t in seq]
            for i in range(self.order - 1, len(padded)):
                total -= math.log2(self.prob(padded[i - self.order + 1:i], padded[i]))
                n += 1
        return total, n


def fit_ngram(seqs: Sequence[Sequence[int]], order: int, vocab_size: int, start: int = 1) -> NGram:
    """Fit an ``order``-gram (>= 1) on event sequences; ``start`` pads each sequence's history."""
    if order < 1:
        raise ValueError(f"an n-gram order is >= 1, got {order}")
    grams: Counter = Counter()  # highest-order counts
    for seq in seqs:
        padded = [start] * (order - 1) + [int(t) for t in seq]
        if any(not 0 <= t < vocab_size for t in padded):
            raise ValueError(f"an event outside the vocabulary 0..{vocab_size - 1}")
        for i in range(order - 1, len(padded)):
            grams[tuple(padded[i - order + 1:i + 1])] += 1
    if not grams:
        raise ValueError("no events to fit an n-gram on")
    levels: list[Counter] = [Counter() for _ in range(order)]  # [k - 1]: k-gram (continuation) counts
    levels[order - 1] = grams
    for k in range(order - 1, 0, -1):  # N1+(. g): distinct left extensions of each k-gram
        for g in levels[k]:
            levels[k - 1][g[1:]] += 1
    model = NGram(order, vocab_size, start)
    for k, level in enumerate(levels, start=1):
        by_history: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for g, c in level.items():
            by_history[g[:-1]][g[-1]] += c
        model.tables.append({h: _context(c) for h, c in by_history.items()})
        model.discounts.append(_discounts(list(level.values())))
    return model


class Unigram:
    """Add-one (Laplace) unigram over ``0..vocab_size - 1``."""

    def __init__(self, seqs: Sequence[Sequence[int]], vocab_size: int):
        self.counts = Counter(int(t) for s in seqs for t in s)
        self.total = sum(self.counts.values())
        self.vocab_size = vocab_size

    def bits(self, seqs: Sequence[Sequence[int]]) -> tuple[float, int]:
        den = self.total + self.vocab_size
        events = [int(t) for s in seqs for t in s]
        return -sum(math.log2((self.counts.get(t, 0) + 1) / den) for t in events), len(events)


def ngram_table(train_seqs: Sequence[Sequence[int]], test_seqs: Sequence[Sequence[int]], vocab_size: int,
                orders: Sequence[int] = DEFAULT_ORDERS, start: int = 1) -> dict:
    """Bits per event on ``test_seqs`` of the unigram and each n-gram order fitted on ``train_seqs``:
    ``{"events", "unigram", "ngram": {order: bits}, "best_order", "best"}`` (the best order is chosen on
    these very sequences, which favours the baseline)."""
    total, n = Unigram(train_seqs, vocab_size).bits(test_seqs)
    if n == 0:
        raise ValueError("no held-out events to score")
    table = {"events": n, "unigram": total / n, "ngram": {}}
    for k in orders:
        b, _ = fit_ngram(train_seqs, k, vocab_size, start).bits(test_seqs)
        table["ngram"][str(k)] = b / n
    best = min(table["ngram"], key=table["ngram"].get)
    table["best_order"], table["best"] = int(best), table["ngram"][best]
    return table
