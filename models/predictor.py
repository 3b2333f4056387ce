"""Explicit linear prediction + hybrid output distribution for categorical stages (LPCNet style).

The categorical head alone must learn precise interpolation (slow).  With ``linear_order > 0`` a
stage predicts a float value

    mu(t) = sum_{i=1..P} a_i * dec(x[t-i])                              (own past, causal)
          + sum_w b_{t % f, w} * dec(below[t // f - back + w])          (tier below, w < window)
          + mu_nn(t)                                                    (network correction)

in the mu-law *decoded* domain, and a scale s(t) = exp(log_s(t)) (mu_nn, log_s: two extra output
rows, ``Stage.lin_out``, next to ``out2``).  With ``adaptive`` (stage config ``adaptive_scale``) the
scale follows recent residuals of the linear part, as the classic adaptive baseline does:

    r(t) = dec(x[t]) - mu_lin(t)     mu_lin = past + below taps + the mu_nn bias (no network term)
    s(t) = (ADAPT_FLOOR + sum_{i=1..L} w_i |r(t-i)|) * exp(clamp(log_s_nn(t)))
    w_i  = (1 - a) a^(i-1) / (1 - a^L)       (L = ADAPT_TAPS, a = ADAPT_DECAY; zeros before t = 0)

(strictly causal: r(t) only enters s(t+1..t+L); the full pass computes all residuals first, the
stream keeps a ring of the last L |r|).

The silence trap: in silence the residuals are ~0, so s = k * (ADAPT_FLOOR + ~0) with k = exp(log_s_nn),
and the expected next |r| is 2 ln 2 * s.  Where the network's k < 1 / (2 ln 2) (what it learns for a
silent past: in training, silence goes on), s(t) -> k * ADAPT_FLOOR / (1 - 2 ln 2 k): a fixed point at
the -60..-70 dBFS the floor allows, whatever the score says.  A stage with score taps therefore adds
``note_floor`` (config ``score.scale_floor``) to the floor where notes sound (the score taps' mask), the
same in training and in both sampling engines: s >= k * note_floor there, and the score taps' resonance
builds the notes from it.  The output logits of the mu-law classes are

    logits_c = nn_logits_c + log P(bin c | discretized logistic(mu, s))

(the end class, when present, keeps its network logit minus the constant log(classes), so that a
flat P gives back the plain categorical head); the softmax renormalises: a product
of experts.  The stage returns these combined logits, so heads, sampling, training and evaluation
are unchanged.  The full pass and the streaming step share the helpers below (``LinearPath``):
``past`` (conv / ring dot product), ``below_part`` (same code for the whole piece and for chunks)
and ``combine`` (the bin log-probabilities).

A stage reading the tier below has a second set of own-past taps, the *fallback* (``fallback_weight``):
rows whose tier below is dropped (conditioning dropout, the "without conditioning" ablation) or absent
use ``mu_lin = sum_i c_i dec(x[t-i])`` instead of the joint taps with a zero below term, which is what
a silent tier below would give (the joint own-past taps were fitted next to the below taps and predict
badly alone).  The chosen mu feeds the logistic, the adaptive-scale residuals and the stream's ring alike.

``lstsq_init`` warm-starts the path from a least-squares fit on training tracks (the joint taps and,
on the same rows, an own-past-only fit for the fallback).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.mulaw import decode_values, mulaw_values

LOG_S_MIN = math.log(1e-4)
LOG_S_MAX = math.log(10.0)  # wider than the whole [-1, 1] range; keeps exp(-log_s) * width > 0
LOG_S_INIT = math.log(0.05)
# adaptive scale (``LinearPath(adaptive=True)``): fixed exponential window over the last |residuals|
UNIFORM_MIX = 1e-3  # share of the uniform distribution mixed into the discretized logistic
ADAPT_TAPS = 64
ADAPT_DECAY = 0.9
ADAPT_FLOOR = 1e-3
LOG_S_ADAPT_INIT = math.log(1.0 / (2.0 * math.log(2.0)))  # logistic with mean |deviation| = s_adapt


def adapt_weights(taps: int = ADAPT_TAPS, decay: float = ADAPT_DECAY) -> np.ndarray:
    """w_1..w_L (float64, (L,)): (1 - a) a^(i-1) / (1 - a^L), summing to 1."""
    i = np.arange(taps, dtype=np.float64)
    return (1.0 - decay) * decay**i / (1.0 - decay**taps)


class LinearPath(nn.Module):
    """Linear prediction taps and the hybrid (discretized logistic) part of the output.

    ``order`` past taps (``past_weight[i-1]`` = a_i); with ``factor``/``back``/``ahead`` given
    (a stage reading the tier below), per-phase below taps ``below_weight`` (factor, window),
    window = back + ahead + 1 covering below[t // f - back .. t // f + ahead], and the fallback
    own-past taps ``fallback_weight`` (P,) for rows without the tier below.  The network's
    mu_nn / log_s come from the stage's ``lin_out`` (two output rows next to ``out2``).

    Model files written before the fallback existed load with the fallback equal to the joint
    own-past taps (``_load_from_state_dict``): the old zero-fill behaviour, until retrained.
    """

    def __init__(self, classes: int, end_class: bool, order: int, factor: int = 1,
                 back: int | None = None, ahead: int | None = None, adaptive: bool = False) -> None:
        super().__init__()
        if order < 1:
            raise ValueError(f"LinearPath: order must be >= 1, got {order}")
        self.classes, self.order, self.factor = int(classes), int(order), int(factor)
        self.end_offset = math.log(self.classes)  # subtracted from the end logit (see combine)
        self.use_below = back is not None
        self.back = int(back) if back is not None else 0
        self.ahead = int(ahead) if ahead is not None else 0
        if self.use_below and (self.back < 0 or self.ahead < 0):
            raise ValueError("LinearPath: negative below window")
        self.window = self.back + self.ahead + 1 if self.use_below else 0
        past = torch.zeros(order)
        past[0] = 1.0  # previous sample
        self.past_weight = nn.Parameter(past)
        self.below_weight = nn.Parameter(torch.zeros(factor, self.window)) if self.use_below else None
        self.fallback_weight = nn.Parameter(past.clone()) if self.use_below else None
        self.adaptive = bool(adaptive)
        self.adapt_taps = ADAPT_TAPS if self.adaptive else 0
        self.note_floor = 0.0  # the stage's score.scale_floor (a stage with score taps): see the module docstring
        self.adapt_floor = ADAPT_FLOOR  # the stage's adapt_floor (its config; ADAPT_FLOOR before the key)
        if self.adaptive:  # fixed, not saved (rebuilt from the constants)
            self.register_buffer("adapt_weight", torch.tensor(adapt_weights(), dtype=torch.float32),
                                 persistent=False)
        v = mulaw_values(classes)
        self.register_buffer("decode_table", torch.tensor(decode_values(classes, end_class), dtype=torch.float32),
                             persistent=False)
        # bin intervals in the float domain: (midpoint to the previous centre, midpoint to the next);
        # the outer edges (+-inf) are handled by masks, the stored values there are finite placeholders
        mid = (v[1:] + v[:-1]) / 2.0
        lo = np.concatenate([[v[0] - 1.0], mid])
        hi = np.concatenate([mid, [v[-1] + 1.0]])
        has_lo = np.ones(classes)
        has_lo[0] = 0.0
        has_hi = np.ones(classes)
        has_hi[-1] = 0.0
        for name, arr in (("bin_lo", lo), ("bin_hi", hi), ("bin_has_lo", has_lo),
                          ("bin_has_hi", has_hi), ("bin_interior", has_lo * has_hi)):
            self.register_buffer(name, torch.tensor(arr, dtype=torch.float32), persistent=False)

    # ------------------------------------------------------------------ numbers
    @property
    def reach(self) -> int:
        """Samples of own past that affect mu / s: x[t-P..t-1] through the taps, and with an adaptive
        scale the residuals r(t-L..t-1), each of which reads P samples further back."""
        return self.order + self.adapt_taps

    def macs_per_sample(self) -> int:
        """Per generated sample: the past taps, the below taps (one phase), ~6 ops per class
        (+ the adaptive-scale window and its residual when adaptive)."""
        return self.order + self.window + 6 * self.classes + (self.adapt_taps + 2 if self.adaptive else 0)

    # ------------------------------------------------------------------ linear prediction
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (any shape, int64) -> decoded floats (end code -> 0.0)."""
        return self.decode_table[codes]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Old model files (no ``fallback_weight``): the fallback starts as the joint own-past taps."""
        key = prefix + "fallback_weight"
        if self.fallback_weight is not None and key not in state_dict and prefix + "past_weight" in state_dict:
            state_dict[key] = state_dict[prefix + "past_weight"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def past(self, u: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, T) = dec(shift(x)) (u[t] = dec(x[t-1])) -> (B, T) sum_i a_i dec(x[t-i]); zeros before 0.

        ``weight``: the taps a_1..a_P (default ``past_weight``)."""
        w = (self.past_weight if weight is None else weight).flip(0).view(1, 1, -1)  # tap k: a_{P-k}
        return F.conv1d(F.pad(u.unsqueeze(1), (self.order - 1, 0)), w)[:, 0]

    def fallback_rows(self, below: torch.Tensor | None, drop: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """(B,) bool: rows that use the fallback taps (tier below dropped, or not given at all);
        None for a path without a tier below."""
        if self.fallback_weight is None:
            return None
        dev = self.decode_table.device
        if below is None or below.shape[-1] == 0:
            return torch.ones(batch, dtype=torch.bool, device=dev)
        if drop is None:
            return torch.zeros(batch, dtype=torch.bool, device=dev)
        drop = torch.as_tensor(drop, device=dev).bool()
        return drop.expand(batch) if drop.dim() == 0 else drop

    def predict(self, u: torch.Tensor, below: torch.Tensor | None, fallback: torch.Tensor | None) -> torch.Tensor:
        """mu_lin without the bias: u (B, T) as in ``past`` -> (B, T).  Joint taps (own past + tier
        below) per row, or the fallback own-past taps where ``fallback`` (B,) is set."""
        b, t = u.shape
        mu = self.past(u)
        if fallback is not None:
            mu = torch.where(fallback[:, None], self.past(u, self.fallback_weight), mu)
        y = self.below_part(below, fallback, 0, -(-t // self.factor), b)
        return mu if y is None else mu + y[:, :t]

    def past_rotations(self, fallback: torch.Tensor | None = None) -> torch.Tensor:
        """(P, B, P) ring weights of each row's own-past taps (see ``rotations``): the joint taps, or
        the fallback taps where ``fallback`` (B,) is set; B = 1 when ``fallback`` is None."""
        rot = self.rotations(self.past_weight)[:, None]  # (P, 1, P)
        if fallback is None:
            return rot
        return torch.where(fallback[None, :, None], self.rotations(self.fallback_weight)[:, None], rot)

    @staticmethod
    def ring_lags(n: int) -> torch.Tensor:
        """(n, n) int64: with the newest input in ring slot r, slot s holds lag ((r - s) mod n) + 1;
        entry [r, s] is that lag minus one (the index of its tap)."""
        return (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n

    def rotations(self, weight: torch.Tensor) -> torch.Tensor:
        """(n, n) ring weights for taps ``weight`` (lag 1 first): row r is used when the newest
        input sits in slot r (``ring_lags``)."""
        return weight.detach()[self.ring_lags(weight.numel())]

    # ------------------------------------------------------------------ adaptive scale
    def adapt_scale(self, r_abs: torch.Tensor) -> torch.Tensor:
        """r_abs (B, T) = |r(t)| -> (B, T) s_adapt(t) = floor + sum_{i=1..L} w_i |r(t-i)| (zeros before 0)."""
        w = self.adapt_weight.flip(0).view(1, 1, -1)  # tap j multiplies r_abs[t + j - L]: w_{L-j}
        y = F.conv1d(F.pad(r_abs.unsqueeze(1), (self.adapt_taps, 0)), w.to(r_abs.dtype))[:, 0]
        return self.adapt_floor + y[:, : r_abs.shape[-1]]

    def adapt_rotations(self) -> torch.Tensor:
        """(L, L) ring weights of the adaptive-scale window (see ``rotations``)."""
        return self.rotations(self.adapt_weight)

    @staticmethod
    def adapt_log_s(s_adapt: torch.Tensor, log_s_nn: torch.Tensor) -> torch.Tensor:
        """log s = log s_adapt + clamp(log_s_nn)."""
        return torch.log(s_adapt) + log_s_nn.clamp(LOG_S_MIN, LOG_S_MAX)

    def below_part(self, below: torch.Tensor | None, drop: torch.Tensor | None, j0: int, j1: int,
                   batch: int) -> torch.Tensor | None:
        """Below contribution for stage samples [j0*f, j1*f): (B, (j1 - j0) * f), or None (no tier below).

        below (B, n) codes; samples outside [0, n) and dropped examples (``drop`` (B,) bool: they
        use the fallback taps instead) contribute zero.
        """
        if not self.use_below or below is None or below.shape[-1] == 0:
            return None
        n = below.shape[-1]
        dev = self.decode_table.device
        idx = torch.arange(j0 - self.back, j1 + self.ahead, device=dev)  # (W,)
        inside = (idx >= 0) & (idx < n)
        vals = self.decode(below[:, idx.clamp(0, n - 1)].to(dev))  # (B, W)
        vals = torch.where(inside[None, :], vals, torch.zeros_like(vals))
        y = F.conv1d(vals.unsqueeze(1), self.below_weight.unsqueeze(1))  # (B, f, j1 - j0)
        y = y.transpose(1, 2).reshape(y.shape[0], -1)  # interleave phases: (B, (j1 - j0) * f)
        if drop is not None:
            y = torch.where(drop.to(dev).bool()[:, None], torch.zeros_like(y), y)
        return y

    # ------------------------------------------------------------------ hybrid distribution
    def bin_log_probs(self, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """mu, log_s (...) -> (..., classes) log P(bin c) under a discretized logistic(mu, s).

        sigmoid(b) - sigmoid(a) = sigmoid(b) * sigmoid(-a) * (1 - exp(a - b)): every factor is
        computed without cancellation (b - a = width / s exactly).
        """
        inv_s = torch.exp(-log_s.clamp(LOG_S_MIN, LOG_S_MAX)).unsqueeze(-1)  # (..., 1)
        m = mu.unsqueeze(-1)
        b = (self.bin_hi - m) * inv_s
        a = (self.bin_lo - m) * inv_s
        return (F.logsigmoid(b) * self.bin_has_hi + F.logsigmoid(-a) * self.bin_has_lo
                + torch.log(-torch.expm1((self.bin_lo - self.bin_hi) * inv_s)) * self.bin_interior)

    def combine(self, logits: torch.Tensor, mu_nn: torch.Tensor, log_s: torch.Tensor,
                mu_lin: torch.Tensor) -> torch.Tensor:
        """nn logits (..., C), mu_nn, log_s, mu_lin (...) -> combined logits (..., C).

        The mu-law classes get + log P(bin | mu_lin + mu_nn, exp(log_s)); the end class (if any)
        keeps its nn logit, shifted by the constant -log(classes): the mu-law classes' total mass
        is then an average (not a sum) of their exp(nn logits) weighted by P, and the offset keeps
        the end/non-end balance of a flat P (P = 1/classes) equal to the plain categorical head's.
        """
        lp = self.bin_log_probs(mu_lin + mu_nn, log_s)  # (..., classes)
        # a small uniform share: a sample far from mu costs at most ~log2(classes / UNIFORM_MIX) bits
        lp = torch.logaddexp(lp + math.log1p(-UNIFORM_MIX), torch.full_like(lp, math.log(UNIFORM_MIX / self.classes)))
        if logits.shape[-1] == self.classes:
            return logits + lp
        return torch.cat([logits[..., : self.classes] + lp, logits[..., self.classes:] - self.end_offset], dim=-1)


# ----------------------------------------------------------------------------- least squares warm start


def _past_features(y: np.ndarray, t: np.ndarray, order: int) -> np.ndarray:
    """y[t-1], ..., y[t-order] (zeros before the start): (len(t), order)."""
    y_pad = np.concatenate([np.zeros(order), y])
    return y_pad[t[:, None] + order - 1 - np.arange(order)[None, :]]


def _below_features(b: np.ndarray, t: np.ndarray, factor: int, back: int, ahead: int) -> np.ndarray:
    """b[t//f - back .. t//f + ahead] (zeros outside the piece): (len(t), back + ahead + 1)."""
    b_pad = np.concatenate([np.zeros(back), b, np.zeros(ahead)])
    return b_pad[(t // factor)[:, None] + np.arange(back + ahead + 1)[None, :]]


def _design_matrix(lin, table: np.ndarray, xs: list[np.ndarray], bs: list, use_below: bool, max_rows: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the least-squares problem: (features (N, 1 + P [+ f * window]), targets (N,)), about
    ``max_rows`` sampled times shared among the tracks by length (one seeded generator, track order)."""
    total = sum(len(x) for x in xs)
    if total == 0:
        raise ValueError("lstsq_init: no samples")
    rng = np.random.default_rng(seed)
    rows_x, rows_y = [], []
    for x, below in zip(xs, bs):
        n = len(x)
        if n == 0:
            continue
        k = min(n, max(1, int(round(max_rows * n / total))))
        t = np.sort(rng.choice(n, size=k, replace=False))
        y = table[x]
        rows_x.append(_track_rows(lin, table, y, below, t, use_below))
        rows_y.append(y[t])
    return np.concatenate(rows_x), np.concatenate(rows_y)


def _track_rows(lin, table: np.ndarray, y: np.ndarray, below: np.ndarray | None, t: np.ndarray,
                use_below: bool) -> np.ndarray:
    """One track's rows at times t: intercept, own past y[t-1..t-P], the below window in its phase's columns."""
    p, f = lin.order, lin.factor
    xm = np.zeros((len(t), 1 + p + (f * lin.window if use_below else 0)))
    xm[:, 0] = 1.0
    xm[:, 1:1 + p] = _past_features(y, t, p)
    if use_below:
        if below is None:
            raise ValueError("lstsq_init: below_list has a missing entry for a stage with a tier below")
        feats = _below_features(table[np.asarray(below, dtype=np.int64)], t, f, lin.back, lin.ahead)
        ph = t % f
        for phase in range(f):
            sel = ph == phase
            c0 = 1 + p + phase * lin.window
            xm[sel, c0:c0 + lin.window] = feats[sel]
    return xm


def _logistic_scale(lin, resid: np.ndarray) -> float:
    """The logistic scale from the mean absolute residual (E|X - mu| = 2 s ln 2); with an adaptive
    scale, the multiplier of s_adapt instead."""
    if lin.adaptive:
        return math.exp(LOG_S_ADAPT_INIT)  # a multiplier of s_adapt, not an absolute scale
    return max(float(np.mean(np.abs(resid))) / (2.0 * math.log(2.0)), 1e-4)


def _fallback_fit(xm: np.ndarray, ym: np.ndarray, w: np.ndarray, p: int, noise: float) -> tuple[np.ndarray, float]:
    """Own-past-only taps on the same rows, the intercept fixed to the joint fit's, the past read through
    ``noise`` as in ``_ridge_fit``: (taps, rmse)."""
    own = xm[:, 1:1 + p]
    fallback = _ridge_fit(own, ym - w[0], np.arange(p), noise)
    return fallback, float(np.sqrt(np.mean((own @ fallback + w[0] - ym) ** 2)))


def noise_gain(past: np.ndarray) -> float:
    """sqrt(1 + sum a_i^2) of own-past taps a: how much a prediction from a past carrying white noise amplifies
    it (the residual's std over the noise's, for a past of pure noise)."""
    a = np.asarray(past, np.float64)
    return float(np.sqrt(1.0 + np.sum(a**2)))


def _ridge_fit(xm: np.ndarray, ym: np.ndarray, noisy: np.ndarray, noise: float) -> np.ndarray:
    """Least squares; with ``noise`` > 0, as if the columns ``noisy`` (the own past) carried white noise of
    ``noise`` times the plain fit's rms residual (LPCNet's noise injection, in closed form: a ridge of
    N * noise^2 * mse on those columns).  Sampling feeds a stage its own draws, which deviate from the
    prediction by about the residual: taps fitted on clean audio can amplify that deviation many times
    (the noise gain sqrt(1 + sum a_i^2)), and the adaptive scale then follows the amplified residuals."""
    w, *_ = np.linalg.lstsq(xm, ym, rcond=None)
    if noise <= 0:
        return w
    lam = len(ym) * noise**2 * float(np.mean((xm @ w - ym) ** 2))
    gram = xm.T @ xm
    gram[noisy, noisy] += lam
    return np.linalg.lstsq(gram, xm.T @ ym, rcond=None)[0]  # lstsq: a rank-deficient fit stays solvable


def lstsq_init(stage, x_list: Sequence[np.ndarray], below_list: Sequence[np.ndarray | None] | None = None,
               max_rows: int = 200_000, seed: int = 0, input_noise: float = 0.0) -> dict:
    """Fit the stage's linear path by least squares and load it (``stage.set_linear_predictor``).

    x_list: int code arrays (tracks) of the stage's tier; below_list: the aligned tier-below codes
    (ignored for a stage without below taps).  Uses exactly the stage's taps: own past
    x[t-1..t-P] (zeros before the start), per-phase below window, one intercept (the bias of mu_nn).
    The logistic scale is set from the mean absolute residual; with an adaptive scale, the log_s
    bias is log(1 / (2 ln 2)) instead (s = s_adapt: mean |deviation| = the recent mean |residual|).
    A stage with below taps also gets its fallback taps: own past only, on the same rows, with the
    same intercept (the mu bias is shared).  Returns {"past", "below", "fallback", "bias", "scale",
    "rows", "rmse", "fallback_rmse", "noise_gain"} ("fallback", "fallback_rmse": None without below taps).
    ``input_noise``: the own past read through noise of that share of the residual (``_ridge_fit``).
    """
    lin = getattr(stage, "linear", None)
    if lin is None:
        raise ValueError(f"stage {stage.index}: no linear path (linear_order = 0 or not categorical)")
    table = decode_values(lin.classes, stage.end_code is not None)
    p, f = lin.order, lin.factor
    use_below = lin.use_below and below_list is not None
    xs = [np.asarray(x, dtype=np.int64) for x in x_list]
    bs = list(below_list) if use_below else [None] * len(xs)
    xm, ym = _design_matrix(lin, table, xs, bs, use_below, max_rows, seed)
    w = _ridge_fit(xm, ym, np.arange(1, 1 + p), input_noise)
    resid = xm @ w - ym
    scale = _logistic_scale(lin, resid)
    fallback, fallback_rmse = _fallback_fit(xm, ym, w, p, input_noise) if use_below else (None, None)
    below_w = w[1 + p:].reshape(f, lin.window) if use_below else None
    stage.set_linear_predictor(torch.tensor(w[1:1 + p]), None if below_w is None else torch.tensor(below_w),
                               bias=float(w[0]), scale=scale,
                               fallback=None if fallback is None else torch.tensor(fallback))
    return {"past": w[1:1 + p], "below": below_w, "fallback": fallback, "bias": float(w[0]), "scale": scale,
            "rows": int(len(ym)), "rmse": float(np.sqrt(np.mean(resid**2))), "fallback_rmse": fallback_rmse,
            "noise_gain": noise_gain(w[1:1 + p])}
