"""Classic non-deep baselines scored in exact bits per sample over the same mu-law bins.

- ``LinearPredictor``: least-squares linear prediction of a tier's next sample (mu-law decoded to
  float) from its own past (``order`` samples) and, for a stage ``k > 0``, from the tier below
  around ``t`` (below samples ``t//f - back .. t//f + ahead``, the window a stage may see).  For
  ``f > 1`` one set of coefficients per phase ``t % f`` (the interpolation weights differ by phase).
  Fitted on at most ``max_rows`` randomly placed rows of the training split.
- The residual is scored as a discretized Laplace distribution centred at the prediction: the
  probability of code ``c`` is the Laplace mass of ``c``'s interval in the float domain (bin
  edges halfway between neighbouring decoded values, the outer edges at +-inf).  The scale is
  the exponentially weighted mean absolute residual of the past (``alpha``), floored.  A uniform
  share ``eps`` keeps every code possible.  The result is an exact code length.
- ``unigram_bits``: code frequencies on train (add-one smoothing), scored on the held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.signal import lfilter

from models.mulaw import mulaw_values
from pipeline.corpus.dataset import split_tiers

LOG2 = np.log(2.0)


# ----------------------------------------------------------------------------- bins and scoring


def decode_table(bits: int = 8) -> np.ndarray:
    """Float value of every code: float64 (classes,) (models/mulaw.py)."""
    return mulaw_values(2**bits)


def bin_edges(bits: int = 8) -> np.ndarray:
    """Interval edges of the codes in the float domain: (classes + 1,), outer edges +-inf."""
    v = decode_table(bits)
    mid = (v[1:] + v[:-1]) / 2.0
    return np.concatenate([[-np.inf], mid, [np.inf]])


def laplace_interval_prob(lo: np.ndarray, hi: np.ndarray, mu: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mass of ``[lo, hi]`` under Laplace(mu, b), computed without cancellation."""
    with np.errstate(invalid="ignore", over="ignore"):
        zl, zh = (lo - mu) / b, (hi - mu) / b
        width = zh - zl  # > 0, may be inf
        tail = -np.expm1(-width)  # 1 - exp(-(zh - zl))
        above = 0.5 * np.exp(-zl) * tail  # both edges above the centre
        below = 0.5 * np.exp(zh) * tail  # both edges below the centre
        straddle = 1.0 - 0.5 * np.exp(zl) - 0.5 * np.exp(-zh)
    p = np.where(zl >= 0, above, np.where(zh <= 0, below, straddle))
    return np.nan_to_num(p, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)


def adaptive_scale(abs_resid: np.ndarray, alpha: float, floor: float, init: float) -> np.ndarray:
    """Scale for sample t from residuals before t: EWMA of |r| (starts at ``init``), floored."""
    # m[t] = (1 - alpha) * m[t-1] + alpha * |r[t]|  ->  scale[t] = m[t-1]
    m, _ = lfilter([alpha], [1.0, alpha - 1.0], abs_resid, zi=[(1.0 - alpha) * init])
    scale = np.concatenate([[init], m[:-1]])
    return np.maximum(scale, floor)


def discretized_laplace_bits(
    codes: np.ndarray, pred: np.ndarray, scale: np.ndarray, edges: np.ndarray, eps: float = 1e-4
) -> np.ndarray:
    """Exact bits of each code under the discretized Laplace (mixed with ``eps`` uniform)."""
    classes = len(edges) - 1
    p = laplace_interval_prob(edges[codes], edges[codes + 1], pred, scale)
    return -np.log2((1.0 - eps) * p + eps / classes)


# ----------------------------------------------------------------------------- features


def past_features(y: np.ndarray, t: np.ndarray, order: int) -> np.ndarray:
    """Own past ``y[t-1], ..., y[t-order]`` (zeros = silence before the start): (len(t), order)."""
    y_pad = np.concatenate([np.zeros(order), y])  # index shift by `order`
    idx = t[:, None] + order - 1 - np.arange(order)[None, :]
    return y_pad[idx]


def below_features(below: np.ndarray, t: np.ndarray, factor: int, back: int, ahead: int) -> np.ndarray:
    """Tier-below window ``below[t//f - back .. t//f + ahead]`` (zeros outside): (len(t), back+ahead+1)."""
    b_pad = np.concatenate([np.zeros(back), below, np.zeros(ahead)])
    idx = (t // factor)[:, None] + np.arange(back + ahead + 1)[None, :]
    return b_pad[idx]


@dataclass
class LinearPredictor:
    """Least-squares linear predictor of a tier from its past (and the tier below)."""

    order: int = 32
    factor: int = 1  # samples of this tier per sample of the tier below
    back: int = 0  # below samples before t // factor (0 and ahead 0: no tier below)
    ahead: int = 0
    use_below: bool = False
    bits: int = 8
    alpha: float = 0.05  # EWMA rate of the residual scale
    floor: float = 1e-5  # smallest scale in the float domain
    eps: float = 1e-4
    weights: dict[int, np.ndarray] = field(default_factory=dict)  # phase -> (features,)
    init_scale: float = 0.05

    def features(self, y: np.ndarray, below: np.ndarray | None, t: np.ndarray) -> np.ndarray:
        """Design matrix rows for positions t: [1, past..., below window...]."""
        cols = [np.ones((len(t), 1)), past_features(y, t, self.order)]
        if self.use_below:
            cols.append(below_features(below, t, self.factor, self.back, self.ahead))
        return np.concatenate(cols, axis=1)

    def _phases(self) -> int:
        return self.factor if self.use_below else 1

    def fit(self, tracks: Sequence[tuple[np.ndarray, np.ndarray | None]], max_rows: int = 200_000, seed: int = 0):
        """Fit on (codes, below codes | None) pairs from at most ``max_rows`` random rows."""
        table = decode_table(self.bits)
        rng = np.random.default_rng(seed)
        total = sum(len(x) for x, _ in tracks)
        if total == 0:
            raise ValueError("no training samples for the linear baseline")
        rows_x, rows_y, rows_p, resid_abs = [], [], [], []
        for x, below in tracks:
            n = len(x)
            k = min(n, max(1, int(round(max_rows * n / total))))
            t = np.sort(rng.choice(n, size=k, replace=False))
            y = table[x]
            rows_x.append(self.features(y, None if below is None else table[below], t))
            rows_y.append(y[t])
            rows_p.append(t % self._phases())
        X, Y, P = np.concatenate(rows_x), np.concatenate(rows_y), np.concatenate(rows_p)
        for phase in range(self._phases()):
            sel = P == phase
            w, *_ = np.linalg.lstsq(X[sel], Y[sel], rcond=None)
            self.weights[phase] = w
            resid_abs.append(np.abs(X[sel] @ w - Y[sel]))
        self.init_scale = float(max(np.mean(np.concatenate(resid_abs)), self.floor))
        return self

    def predict(self, x: np.ndarray, below: np.ndarray | None, chunk: int = 65536) -> np.ndarray:
        """Prediction (float) of every sample of a whole track: (n,)."""
        table = decode_table(self.bits)
        y = table[x]
        b = None if below is None else table[below]
        out = np.empty(len(x))
        for s in range(0, len(x), chunk):
            t = np.arange(s, min(len(x), s + chunk))
            F = self.features(y, b, t)  # (chunk, features)
            ph = t % self._phases()
            pred = np.zeros(len(t))
            for phase, w in self.weights.items():
                sel = ph == phase
                pred[sel] = F[sel] @ w
            out[t] = pred
        return np.clip(out, -1.0, 1.0)

    def track_bits(self, x: np.ndarray, below: np.ndarray | None = None) -> np.ndarray:
        """Exact bits of every sample of a whole track: (n,)."""
        x = np.asarray(x, dtype=np.int64)
        pred = self.predict(x, below)
        y = decode_table(self.bits)[x]
        scale = adaptive_scale(np.abs(y - pred), self.alpha, self.floor, self.init_scale)
        return discretized_laplace_bits(x, pred, scale, bin_edges(self.bits), self.eps)


def unigram_bits(train: Sequence[np.ndarray], test: Sequence[np.ndarray], classes: int = 256) -> float:
    """Bits per sample of ``test`` under train code frequencies with add-one smoothing."""
    counts = np.ones(classes)
    for x in train:
        counts += np.bincount(np.asarray(x, dtype=np.int64), minlength=classes)[:classes]
    logp = np.log2(counts / counts.sum())
    total = sum(len(x) for x in test)
    if total == 0:
        return float("nan")
    return float(-sum(logp[np.asarray(x, dtype=np.int64)].sum() for x in test) / total)


def stage_linear_baseline(
    data_dir: str | Path, manifest: dict, cfg, k: int, split: str = "test", order: int = 32,
    max_rows: int = 200_000, max_seconds: float | None = None, seed: int = 0,
) -> dict:
    """Linear baseline of stage k (own past + tier-below window): {"bits_per_sample", "samples"}."""
    rates = list(cfg.data.rates)
    rate = rates[k]
    use_below = k > 0
    factor = rate // rates[k - 1] if use_below else 1
    la = cfg.stages[k].conditioning.lookahead if k < len(cfg.stages) else 8
    model = LinearPredictor(order=order, factor=factor, back=la if use_below else 0,
                            ahead=la if use_below else 0, use_below=use_below, bits=cfg.data.mu_bits)
    train_x = split_tiers(data_dir, manifest, "train", rate)
    train_b = split_tiers(data_dir, manifest, "train", rates[k - 1]) if use_below else [None] * len(train_x)
    model.fit(list(zip(train_x, train_b)), max_rows=max_rows, seed=seed)
    test_x = split_tiers(data_dir, manifest, split, rate, max_seconds)
    test_b = split_tiers(data_dir, manifest, split, rates[k - 1], max_seconds) if use_below else [None] * len(test_x)
    total_bits, total_n = 0.0, 0
    for x, b in zip(test_x, test_b):
        total_bits += float(model.track_bits(x, b).sum())
        total_n += len(x)
    return {"bits_per_sample": total_bits / max(total_n, 1), "samples": total_n}


def fine_tier_baselines(
    data_dir: str | Path, manifest: dict, cfg, split: str = "test", order: int = 32,
    max_rows: int = 200_000, max_seconds: float | None = None, seed: int = 0,
) -> dict:
    """Unigram entropy and linear AR (own past only) of the fine tier, in bits per sample."""
    rate = max(cfg.data.rates)
    train = split_tiers(data_dir, manifest, "train", rate)
    test = split_tiers(data_dir, manifest, split, rate, max_seconds)
    ar = LinearPredictor(order=order, bits=cfg.data.mu_bits).fit([(x, None) for x in train], max_rows, seed)
    n = sum(len(x) for x in test)
    ar_bits = sum(float(ar.track_bits(x).sum()) for x in test) / max(n, 1)
    return {
        "unigram_bits_per_sample": unigram_bits(train, test, cfg.data.classes),
        "linear_ar_bits_per_sample": ar_bits,
    }
