"""Numba kernels of the fused streaming engine (models/fused.py): many whole-stage steps per call.

One call runs steps ``t0 .. t1 - 1`` of one stage for all rows, with no Python between steps:
input embedding, the dilated gated layers (rings of past layer inputs), skips, output layers,
the linear-prediction path (own-past ring, tier-below part, score taps, adaptive scale), the
hybrid bins (``LinearPath.combine``), and in sampling mode guidance, the tier prior, the END
rule, temperature, top-p and an inverse-CDF draw from the stream's uniform of the step
(models/draw.py ``stream_uniforms`` and models/heads.py ``inverse_cdf`` are the reference).
It returns early when the history stack needs a new frame (the caller steps it: ``history_step``)
or when every stream has ended.

Shapes: rows = B (or 2B with classifier-free guidance twins), R residual, G2 = 2 * gate width,
S skip, CO = head channels + linear-path rows, P linear order, Q score taps.  float32 network, float64
for the sampling arithmetic (the reference samples in float64 too).  The four per-sample matrices
(``wtap``, ``wsr``, ``w1``, ``w2``) may be float32, bf16 (uint16) or int8 with a float32 scale per
output channel (models/quant.py); ``_mmw`` picks the product by their dtype at compile time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from models.draw import GOLDEN, MIX1, MIX2, SALT  # the reference generator's constants
from models.fused_math import exp64, log64

# reassociation/contraction only (vectorised sums); no "nnan"/"ninf": END is masked with -inf
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
TANH_CLAMP = np.float32(7.90531110763549805)
SKIP_Z = 30.0  # a bin with both standardized edges beyond +-30 has P < e^-30: its log-prob is the floor's (to 3e-8)
# kernel exit codes
DONE, NEED_HISTORY, ALL_ENDED = 0, 1, 2


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model="numpy")
def _tanh(x):
    """float32 tanh as a rational function (vectorises; max error ~2 ulp).  The coefficients are
    the minimax fit used by Eigen's ``ptanh_float``.  Its callers compile with ``error_model="numpy"``:
    Python's check of the division for zero (q >= 4.9e-3 here) keeps a loop from vectorising
    (measured: the 20 layers' gates at batch 1 took 19 us a step, 2.6 us without it)."""
    x = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x * p / q


@njit(cache=True, fastmath=FASTMATH)
def _mm(x, w, out, blas_rows):
    """out (rows, O) = x (rows, I) @ w (I, O); BLAS from ``blas_rows`` rows up, loops below."""
    rows, n_in = x.shape
    n_out = w.shape[1]
    if rows >= blas_rows:
        np.dot(x, w, out)
        return
    for b in range(rows):
        # 1-D views (the inner loop vectorises; 2-D indexing does not: 1.7x) and 8 inputs per pass
        # over ``ob`` (one load/store of it per 8 products: 1.6-2.2x at 64 x 64, measured)
        ob, xb = out[b], x[b]
        for o in range(n_out):
            ob[o] = 0.0
        i = 0
        while i + 8 <= n_in:
            x0, x1, x2, x3, x4, x5, x6, x7 = xb[i], xb[i + 1], xb[i + 2], xb[i + 3], xb[i + 4], xb[i + 5], \
                xb[i + 6], xb[i + 7]
            w0, w1, w2, w3, w4, w5, w6, w7 = w[i], w[i + 1], w[i + 2], w[i + 3], w[i + 4], w[i + 5], w[i + 6], \
                w[i + 7]
            for o in range(n_out):
                ob[o] += ((x0 * w0[o] + x1 * w1[o]) + (x2 * w2[o] + x3 * w3[o])) + \
                    ((x4 * w4[o] + x5 * w5[o]) + (x6 * w6[o] + x7 * w7[o]))
            i += 8
        while i < n_in:
            xi, wi = xb[i], w[i]
            for o in range(n_out):
                ob[o] += xi * wi[o]
            i += 1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _bf16(u):
    """A bf16 weight (uint16, the float32's high half) -> float32."""
    return np.uint32(np.uint32(u) << np.uint32(16)).view(np.float32)


@njit(cache=True, fastmath=FASTMATH)
def _mm_q8(x, w8, scale, out):
    """out (rows, O) = scale (O,) * (x (rows, I) @ w8 (I, O) int8): float32 accumulation, the
    channel's scale applied once at the end.  ``_mm``'s loops (int8 -> float32 in the inner loop:
    it still vectorises, vpmovsxbd + vcvtdq2ps before each FMA)."""
    rows, n_in = x.shape
    n_out = w8.shape[1]
    for b in range(rows):
        ob, xb = out[b], x[b]
        for o in range(n_out):
            ob[o] = 0.0
        i = 0
        while i + 8 <= n_in:
            x0, x1, x2, x3, x4, x5, x6, x7 = xb[i], xb[i + 1], xb[i + 2], xb[i + 3], xb[i + 4], xb[i + 5], \
                xb[i + 6], xb[i + 7]
            w0, w1, w2, w3, w4, w5, w6, w7 = w8[i], w8[i + 1], w8[i + 2], w8[i + 3], w8[i + 4], w8[i + 5], \
                w8[i + 6], w8[i + 7]
            for o in range(n_out):
                ob[o] += ((x0 * np.float32(w0[o]) + x1 * np.float32(w1[o]))
                          + (x2 * np.float32(w2[o]) + x3 * np.float32(w3[o]))) + \
                    ((x4 * np.float32(w4[o]) + x5 * np.float32(w5[o]))
                     + (x6 * np.float32(w6[o]) + x7 * np.float32(w7[o])))
            i += 8
        while i < n_in:
            xi, wi = xb[i], w8[i]
            for o in range(n_out):
                ob[o] += xi * np.float32(wi[o])
            i += 1
        for o in range(n_out):
            ob[o] *= scale[o]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _nibbles(u):
    """A byte of two int4 weights (uint8 holding the int8 q0 + 16 q1, ``models.quant.quantize_int4``) -> (q0, q1)
    as float32: q1 = floor(byte / 16 + 1/2), exact for q0, q1 in [-7, 7].  In float arithmetic: numba widens
    integer masks and shifts to int64, whose conversion to float vectorises at half the width (measured 2x
    slower than this)."""
    f = np.float32(np.int8(u))
    h = np.floor(f * np.float32(0.0625) + np.float32(0.5))
    return f - np.float32(16.0) * h, h


@njit(cache=True, fastmath=FASTMATH)
def _mm_q4(x, w4, scale, out):
    """out (rows, O) = scale (O,) * (x (rows, I) @ q (I, O)), q the int4 values of w4 (ceil(I/2), O) uint8
    (``models.quant.quantize_int4``: byte row j holds q[2j] and q[2j + 1]).
    ``_mm_q8``'s loops over half the bytes (``_nibbles`` per byte), float32 accumulation, the channel's scale once
    at the end."""
    rows, n_in = x.shape
    n_out = w4.shape[1]
    for b in range(rows):
        ob, xb = out[b], x[b]
        for o in range(n_out):
            ob[o] = 0.0
        i = 0
        while i + 8 <= n_in:
            x0, x1, x2, x3, x4, x5, x6, x7 = xb[i], xb[i + 1], xb[i + 2], xb[i + 3], xb[i + 4], xb[i + 5], \
                xb[i + 6], xb[i + 7]
            j = i // 2
            w0, w1, w2, w3 = w4[j], w4[j + 1], w4[j + 2], w4[j + 3]
            for o in range(n_out):
                l0, h0 = _nibbles(w0[o])
                l1, h1 = _nibbles(w1[o])
                l2, h2 = _nibbles(w2[o])
                l3, h3 = _nibbles(w3[o])
                ob[o] += ((x0 * l0 + x1 * h0) + (x2 * l1 + x3 * h1)) + ((x4 * l2 + x5 * h2) + (x6 * l3 + x7 * h3))
            i += 8
        while i < n_in:  # the rest, two inputs (or the last one) to a byte row
            wj = w4[i // 2]
            xi = xb[i]
            for o in range(n_out):
                lo, hi = _nibbles(wj[o])
                ob[o] += xi * (lo if i % 2 == 0 else hi)
            i += 1
        for o in range(n_out):
            ob[o] *= scale[o]


@njit(cache=True, fastmath=FASTMATH)
def _mm_bf16(x, wh, out):
    """out (rows, O) = x (rows, I) @ wh (I, O) bf16 (uint16 high halves), float32 accumulation."""
    rows, n_in = x.shape
    n_out = wh.shape[1]
    for b in range(rows):
        ob, xb = out[b], x[b]
        for o in range(n_out):
            ob[o] = 0.0
        i = 0
        while i + 8 <= n_in:
            x0, x1, x2, x3, x4, x5, x6, x7 = xb[i], xb[i + 1], xb[i + 2], xb[i + 3], xb[i + 4], xb[i + 5], \
                xb[i + 6], xb[i + 7]
            w0, w1, w2, w3, w4, w5, w6, w7 = wh[i], wh[i + 1], wh[i + 2], wh[i + 3], wh[i + 4], wh[i + 5], \
                wh[i + 6], wh[i + 7]
            for o in range(n_out):
                ob[o] += ((x0 * _bf16(w0[o]) + x1 * _bf16(w1[o])) + (x2 * _bf16(w2[o]) + x3 * _bf16(w3[o]))) + \
                    ((x4 * _bf16(w4[o]) + x5 * _bf16(w5[o])) + (x6 * _bf16(w6[o]) + x7 * _bf16(w7[o])))
            i += 8
        while i < n_in:
            xi, wi = xb[i], wh[i]
            for o in range(n_out):
                ob[o] += xi * _bf16(wi[o])
            i += 1


def _mmw(x, w, scale, out, blas_rows):
    """out = x @ w in w's format (float32: ``_mm``; int8: ``_mm_q8`` with the per-channel ``scale``;
    uint8, int4 nibbles: ``_mm_q4`` likewise; uint16: ``_mm_bf16``), chosen when numba compiles the caller (a
    specialisation per format)."""
    raise NotImplementedError("numba only (models.fused_kernel)")


@overload(_mmw, jit_options={"fastmath": FASTMATH, "cache": True})
def _mmw_typed(x, w, scale, out, blas_rows):
    if w.dtype == types.int8:
        return lambda x, w, scale, out, blas_rows: _mm_q8(x, w, scale, out)
    if w.dtype == types.uint8:
        return lambda x, w, scale, out, blas_rows: _mm_q4(x, w, scale, out)
    if w.dtype == types.uint16:
        return lambda x, w, scale, out, blas_rows: _mm_bf16(x, w, out)
    return lambda x, w, scale, out, blas_rows: _mm(x, w, out, blas_rows)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _network(t, wtap, dil, ring_off, ring, addend, wsr, bres, bskip, w1, b1, w2, b2, s_tap, s_sr, s1, s2w,
             h, xin, z, gate, sr, skip, s2, out, blas_rows):
    """The main stack for one step: the input embedding h (rows, R) -> out (rows, CO) (the linear
    path's rows not yet combined).  ``addend`` (rows, L*G2): conv bias + genre + history + conditioning.

    Per layer two matrix products: the dilated taps on [h(t) | h(t-d) | ..] (wtap (L, k*R, G2)),
    and skip and residual together on the gate (wsr (L, G, S + R); the last layer's residual part is 0).
    The four matrices in float32, bf16 (uint16) or int8 with per-channel scales (s_tap (L, G2),
    s_sr (L, S + R), s1 (S2,), s2w (CO,); unused placeholders otherwise): ``_mmw``.
    """
    rows, n_res = h.shape
    n_layers, kr, g2 = wtap.shape[0], xin.shape[1], z.shape[1]  # (int4 packs two inputs to a byte)
    k = kr // n_res
    g = g2 // 2
    n_skip = skip.shape[1]
    for b in range(rows):
        for s in range(n_skip):
            skip[b, s] = bskip[s]
    for i in range(n_layers):
        d = dil[i]
        m = d * (k - 1)
        for b in range(rows):  # the layer input and its past at lags d, 2d, .. (zeros before t = 0)
            for r in range(n_res):
                xin[b, r] = h[b, r]
        if m > 0:
            base = ring_off[i]
            for j in range(1, k):
                slot = base + (t - d * j) % m
                for b in range(rows):
                    for r in range(n_res):
                        xin[b, j * n_res + r] = ring[slot, b, r]
            slot = base + t % m
            for b in range(rows):
                for r in range(n_res):
                    ring[slot, b, r] = h[b, r]
        _mmw(xin, wtap[i], s_tap[i], z, blas_rows)
        for b in range(rows):  # 1-D views: the loops vectorise
            zb, ab, gb = z[b], addend[b, i * g2:(i + 1) * g2], gate[b]
            for o in range(g2):
                zb[o] += ab[o]
            zf, zg = zb[:g], zb[g:]
            for o in range(g):
                gb[o] = _tanh(zf[o]) * (np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * zg[o]))
        _mmw(gate, wsr[i], s_sr[i], sr, blas_rows)
        br = bres[i]
        for b in range(rows):
            kb, hb, sb, rb = skip[b], h[b], sr[b, :n_skip], sr[b, n_skip:]
            for s in range(n_skip):
                kb[s] += sb[s]
            for r in range(n_res):
                hb[r] += rb[r] + br[r]
    for b in range(rows):
        for s in range(n_skip):
            skip[b, s] = max(skip[b, s], np.float32(0.0))
    _mmw(skip, w1, s1, s2, blas_rows)
    for b in range(rows):
        for s in range(s2.shape[1]):
            s2[b, s] = max(s2[b, s] + b1[s], np.float32(0.0))
    _mmw(s2, w2, s2w, out, blas_rows)
    for b in range(rows):
        for o in range(out.shape[1]):
            out[b, o] += b2[o]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def history_step(mean, w_in, b_in, n, ring, ring_off, spans, dil, wconv, bconv, wres, bres, h, xin, z, gate, y):
    """One frame of the history stack (``HistoryStack.step``: its input projection, then
    ``GatedCausalStack.step``): the frame's mean embedding ``mean`` (rows, R) -> its feature ``h`` (rows, C).

    ``n``: frames stepped before this one.  ``ring`` (sum spans, rows, C) holds each layer's last ``spans[i]``
    inputs at ``ring_off[i]`` + (frame % span) (zeros before frame 0, as the reference's queues).
    ``wconv`` (L, k*C, 2C): rows of the input 0, d, .., d(k-1) frames back; ``bconv`` (L, 2C);
    ``wres`` (L, C, C) as (in, out); ``bres`` (L, C); ``w_in`` (R, C), ``b_in`` (C,).
    """
    rows, c = h.shape
    n_layers = wconv.shape[0]
    k = wconv.shape[1] // c
    _mm(mean, w_in, h, 1 << 30)
    for b in range(rows):
        for o in range(c):
            h[b, o] += b_in[o]
    for i in range(n_layers):
        span, d, base = spans[i], dil[i], ring_off[i]
        slot = base + n % span
        for b in range(rows):
            for r in range(c):
                ring[slot, b, r] = h[b, r]
        for j in range(k):
            src = base + (n - j * d) % span
            for b in range(rows):
                for r in range(c):
                    xin[b, j * c + r] = ring[src, b, r]
        _mm(xin, wconv[i], z, 1 << 30)
        for b in range(rows):
            zb, bc, gb = z[b], bconv[i], gate[b]
            for o in range(2 * c):
                zb[o] += bc[o]
            for o in range(c):
                gb[o] = _tanh(zb[o]) * (np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * zb[c + o]))
        _mm(gate, wres[i], y, 1 << 30)
        for b in range(rows):
            hb, yb, br = h[b], y[b], bres[i]
            for o in range(c):
                hb[o] += yb[o] + br[o]


@njit(cache=True, fastmath=FASTMATH)
def _combine(out_b, mu, log_s, n_mu, channels, edges, keep, floor, end_offset, cdf, logits_b):
    """``LinearPath.combine`` for one row: nn logits out_b[:channels] + log((1 - eps) P(bin | mu, s) + eps / classes)
    -> logits_b (channels,).

    P(bin c) = F(upper edge) - F(lower edge), F the logistic CDF, in float64: unlike the reference's
    log-domain formula this loses relative precision for P below ~1e-12, but the uniform share
    eps / classes (~4e-6) bounds the effect on the log to ~1e-10.  Bins whose edges are all beyond
    SKIP_Z scales (P < e^-30) get the floor alone, without evaluating F.
    """
    ls = min(max(log_s, math.log(1e-4)), math.log(10.0))
    s = math.exp(ls)
    n_edges = n_mu - 1
    c0 = np.searchsorted(edges, mu - SKIP_Z * s)  # edges below: F = 0
    c1 = np.searchsorted(edges, mu + SKIP_Z * s)  # edges from here: F = 1
    for e in range(c0):
        cdf[e] = 0.0
    inv_s = 1.0 / s
    for e in range(c0, min(c1, n_edges)):  # exp64 alone in its loop: so it vectorises (with the 1 / (1 + .) not)
        cdf[e] = exp64((mu - edges[e]) * inv_s)
    for e in range(c0, min(c1, n_edges)):
        cdf[e] = 1.0 / (1.0 + cdf[e])
    for e in range(c1, n_edges):
        cdf[e] = 1.0
    # P = hi - lo per bin (0 outside [c0, c1]: the floor alone); log64, no branch: the loop vectorises
    logits_b[0] = out_b[0] + log64(keep * max(cdf[0], 0.0) + floor)
    for c in range(1, n_edges):
        logits_b[c] = out_b[c] + log64(keep * max(cdf[c] - cdf[c - 1], 0.0) + floor)
    logits_b[n_edges] = out_b[n_edges] + log64(keep * max(1.0 - cdf[n_edges - 1], 0.0) + floor)
    for c in range(n_mu, channels):
        logits_b[c] = out_b[c] - end_offset


@njit(cache=True, fastmath=FASTMATH)
def _share(logit, power):
    """The network's share of the score taps, sigmoid(logit) ** power."""
    w = 1.0 / (1.0 + math.exp(-logit))
    return w if power == 1.0 else w ** power


@njit(cache=True, fastmath=FASTMATH)
def _linear(b, t, prev_b, out_b, lin_taps, lin_ring, dec, lin_below, has_below, anchor_b, anchor_keep,
            score_taps, score_on, has_score, score_resid, res_ring, res_prev,
            adaptive, adapt_w, adapt_ring, mu_prev, lin_bias, channels, adapt_floor, note_floor, adapt_gain,
            scale_clip, score_share, share_power):
    """The linear path of row b at step t: (mu_lin + mu_nn, log_s) for ``_combine``.

    The rings hold each value twice (slots s and s + P), so the last P values are the contiguous
    ``ring[slot + 1 .. slot + P]``, newest last: no modulo in the dot products.  With
    ``score_resid`` the score taps (Q of them) predict the linear part's residual from the ring of
    its last Q residuals (``res_ring``, ``res_prev`` = mu_lin(t-1) + bias; Stage.forward).  ``adapt_gain``
    multiplies the |residual| the adaptive scale reads at this step (``Draw.steady_scale``; 1: as trained);
    ``score_share`` > 0 replaces the network's share of the score taps where notes sound (``Draw.score_share``),
    else the network's share is raised to ``share_power`` (``Draw.share_power``; 1: as trained);
    the adaptive scale is ``anchor_keep`` of its window plus ``anchor_b`` (the anchored scale, models/anchor.py);
    ``scale_clip`` > 0: the |residual| it reads is at most that many times the scale of the draw (``Draw.scale_clip``).
    ``mu_prev`` (rows, 2): mu_lin(t-1) + bias and the logistic scale x[t-1] was drawn with."""
    p = lin_ring.shape[1] // 2
    slot = t % p
    v = dec[prev_b]
    lin_ring[b, slot] = v
    lin_ring[b, slot + p] = v
    past = lin_ring[b, slot + 1:slot + p + 1]  # past[p - 1 - i] = dec(x[t - 1 - i])
    taps = lin_taps[b]
    mu = 0.0
    for i in range(p):
        mu += taps[i] * past[p - 1 - i]
    if has_below:
        mu += lin_below[b]
    log_s = out_b[channels + 1]
    on = 0.0
    if has_score:
        on = score_on[b]
        if score_resid:  # push e(t-1) = dec(x[t-1]) - mu_lin(t-1) - bias (none before t = 0)
            q = res_ring.shape[1] // 2
            r_slot = t % q
            if t > 0:
                e = v - res_prev[b]
                res_ring[b, r_slot] = e
                res_ring[b, r_slot + q] = e
            res_prev[b] = mu + lin_bias
            if on != 0.0:
                w = on * score_share if score_share > 0.0 else on * _share(out_b[channels + 2], share_power)
                rp = res_ring[b, r_slot + 1:r_slot + q + 1]  # newest last
                sc = score_taps[b]
                ms = 0.0
                for i in range(q):
                    ms += sc[i] * rp[q - 1 - i]
                mu = mu + w * ms
        elif on != 0.0:
            w = on * score_share if score_share > 0.0 else on * _share(out_b[channels + 2], share_power)
            ms = 0.0
            sc = score_taps[b]
            for i in range(p):
                ms += sc[i] * past[p - 1 - i]
            mu = mu + w * (ms - mu)
    if adaptive:
        la = adapt_ring.shape[1] // 2
        a_slot = t % la
        if t > 0:
            r = abs(v - mu_prev[b, 0]) * adapt_gain
            if scale_clip > 0.0:
                r = min(r, scale_clip * mu_prev[b, 1])
            adapt_ring[b, a_slot] = r
            adapt_ring[b, a_slot + la] = r
        recent = adapt_ring[b, a_slot + 1:a_slot + la + 1]  # newest last
        s = 0.0
        for i in range(la):
            s += adapt_w[i] * recent[la - 1 - i]
        s = anchor_keep * s + anchor_b
        s = adapt_floor + note_floor * on + s
        log_s = math.log(s) + min(max(log_s, math.log(1e-4)), math.log(10.0))
        mu_prev[b, 0] = mu + lin_bias
        mu_prev[b, 1] = math.exp(log_s)
    return mu + out_b[channels], log_s



@njit(cache=True)
def _uniform(seed, t):
    """Stream uniform of step t: SplitMix64 of seed + (t + 1) * golden, top 53 bits -> [0, 1);
    models/draw.py ``stream_uniforms`` is the reference."""
    z = seed + np.uint64(t + 1) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, fastmath=FASTMATH)
def _embed(prev, emb, float_in, h):
    """The input layer for the samples ``prev`` (rows,): a row of the embedding table (codes), or
    ``prev * emb[0] + emb[1]`` (PCM values, a mixture head's input projection) -> h (rows, R)."""
    for b in range(h.shape[0]):
        hb = h[b]
        if float_in:
            v = np.float32(prev[b])
            for r in range(hb.shape[0]):
                hb[r] = v * emb[0, r] + emb[1, r]
        else:
            row = emb[np.int64(prev[b])]
            for r in range(hb.shape[0]):
                hb[r] = row[r]


PCM_HALF = 32767.5  # 16-bit PCM: bin k has centre k * (1 / PCM_HALF) - 1 (models/heads.py quantize_pcm)


@njit(cache=True)
def _sample_mixture(out_b, m, temperature, seed, t, lg, probs, scratch, order):
    """``LogisticMixtureHead.sample`` with the stream's two uniforms of step t: a component by
    inverse CDF over softmax(logits / T), then mu + s T logit(u) on the nearest 16-bit bin."""
    tt = max(temperature, 1e-6)
    for c in range(m):
        lg[c] = out_b[c]
    k = _draw(lg[:m], tt, 1.0, _uniform(seed, t), probs[:m], scratch, order)
    mu = np.float64(out_b[m + k])
    s = math.exp(max(np.float64(out_b[2 * m + k]), -16.0)) * tt
    u = min(max(_uniform(seed ^ SALT, t), 1e-7), 1.0 - 1e-7)
    v = min(max(mu + s * (math.log(u) - math.log1p(-u)), -1.0), 1.0)
    return np.round((v + 1.0) * PCM_HALF) * (2.0 / 65535.0) - 1.0


TOP_P_BUCKETS = 64  # log-probability buckets of the top-p cut (``_top_p``), over the logits' span
TOP_P_SPAN = 40.0  # nats: the buckets' span at most (classes further below share the last bucket)
TOP_P_MARGIN = 1e-9  # relative: a cut nearer than this to a bucket's edge is made by the full sort
CROWDED = 48  # classes in the boundary bucket from which the full sort is cheaper


@njit(cache=True)
def _top_p_sorted(probs, top_p, total):
    """``_draw``'s top-p cut by a full stable sort: the reference's rule, any distribution."""
    c_n = probs.shape[0]
    idx = np.argsort(-probs, kind="mergesort")
    before = 0.0
    for j in range(c_n):
        c = idx[j]
        if before >= top_p * total and j > 0:
            probs[c] = 0.0
        else:
            before += probs[c]


@njit(cache=True)
def _top_p(lg, mx, temperature, probs, top_p, total, scratch, order):
    """Zero the classes outside the top-p set of ``probs`` (C,) (unnormalised, summing to ``total``): the
    smallest set of the most likely classes whose mass before each member (stable descending order) is
    < top_p * total, as ``_top_p_sorted`` (and models/heads.py ``inverse_cdf``), without sorting all C.

    The classes fall into ``TOP_P_BUCKETS`` equal buckets of their log-probability (lg - mx) / T over its
    span (at most ``TOP_P_SPAN`` nats): a class in a bucket above the one where the buckets' running mass reaches
    the cut is kept, one below it dropped, and only the boundary bucket's few classes are sorted.  Where
    the cut lies within ``TOP_P_MARGIN`` of a bucket's edge, or the boundary bucket is crowded, the full sort
    decides.  ``scratch`` (>= TOP_P_BUCKETS,) float64 and ``order`` (>= C,) int64: work space."""
    c_n = probs.shape[0]
    target = top_p * total
    low = mx
    for c in range(c_n):
        if lg[c] > -np.inf:
            low = min(low, lg[c])
    span = min((mx - low) / temperature, TOP_P_SPAN)
    per = (TOP_P_BUCKETS - 1) / span if span > 1e-9 else 0.0  # buckets per nat
    mass = scratch[:TOP_P_BUCKETS]
    for k in range(TOP_P_BUCKETS):
        mass[k] = 0.0
    for c in range(c_n):
        mass[_bucket(lg[c], mx, temperature, per)] += probs[c]
    above, cut = 0.0, TOP_P_BUCKETS - 1
    for k in range(TOP_P_BUCKETS):
        if above + mass[k] >= target:
            cut = k
            break
        above += mass[k]
    if above + mass[cut] < target * (1.0 + TOP_P_MARGIN):  # (a cut near the bucket's top: the loop below)
        _top_p_sorted(probs, top_p, total)
        return
    n = 0  # the boundary bucket's classes by insertion: descending, ties in class order
    for c in range(c_n):
        if _bucket(lg[c], mx, temperature, per) == cut:
            if n == CROWDED:  # a flat distribution: the full sort is cheaper than insertion
                _top_p_sorted(probs, top_p, total)
                return
            j = n
            while j > 0 and probs[order[j - 1]] < probs[c]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = c
            n += 1
    before, kept = above, 0
    for j in range(n):
        if abs(before - target) <= TOP_P_MARGIN * total:  # the summation order could decide: the full sort does
            _top_p_sorted(probs, top_p, total)
            return
        if before >= target and (j > 0 or cut > 0):
            break
        before += probs[order[j]]
        kept = j + 1
    for j in range(kept, n):
        probs[order[j]] = 0.0
    for c in range(c_n):
        if _bucket(lg[c], mx, temperature, per) > cut:
            probs[c] = 0.0


@njit(cache=True, inline="always")
def _bucket(v, mx, temperature, per):
    """The top-p bucket of a logit: 0 for the most likely class, one more per 1 / ``per`` nats below."""
    d = (mx - v) / temperature * per
    return TOP_P_BUCKETS - 1 if not d < TOP_P_BUCKETS - 1 else int(d)


@njit(cache=True)
def _draw(lg, temperature, top_p, u, probs, scratch, order):
    """Inverse-CDF draw from logits lg (C,) float64 (-inf = never): the reference
    ``models.sampling.inverse_cdf`` (temperature <= 0: argmax; top-p: the smallest set of the
    most likely classes holding ``top_p``, in class order; ``_top_p``)."""
    c_n = lg.shape[0]
    best = 0
    for c in range(1, c_n):
        if lg[c] > lg[best]:
            best = c
    if temperature <= 0.0:
        return best
    mx = lg[best]
    total = 0.0
    for c in range(c_n):  # branch-free, exp64: the loop vectorises (e^v below e^-745 is 0, as libm's)
        v = (lg[c] - mx) / temperature
        probs[c] = exp64(v) * (v > -745.0)
    for c in range(c_n):
        total += probs[c]
    if top_p < 1.0:
        _top_p(lg, mx, temperature, probs, top_p, total, scratch, order)
        total = 0.0
        for c in range(c_n):
            total += probs[c]
    target = u * total
    acc = 0.0
    last = best
    for c in range(c_n):
        if probs[c] > 0.0:
            acc += probs[c]
            last = c
            if acc > target:
                return c
    return last


@njit(cache=True, nogil=True)
def run_steps(t0, t1, t_resume, n_batch,
              # network
              emb, wtap, dil, ring_off, ring, bias, condp, cond_base, has_cond, wsr, bres, bskip,
              w1, b1, w2, b2, s_tap, s_sr, s1, s2w,
              # linear path
              has_lin, lin_taps, lin_ring, dec, lin_below, below_base, has_below, anchor, has_anchor, anchor_keep,
              score_taps, score_on,
              score_base, has_score, score_resid, res_ring, res_prev,
              adaptive, adapt_w, adapt_ring, mu_prev, lin_bias, adapt_floor, tail_floor, tail_from, note_floor,
              adapt_gain, scale_clip,
              score_share, share_power,
              edges, keep, floor, end_offset, n_mu,
              # history
              pool, frame_sum,
              # sampling
              prev, forced, n_forced, record, rec, rec_base, seeds, twin, guidance, band, band_base, prior_scale,
              prior_values, end_code, free_length, min_length, end_threshold, temperature, top_p,
              x, ended, lengths, silence, mixtures,
              # work buffers
              h, xin, z, gate, sr, skip, s2, out, addend, logits, lg, probs, cdf, scratch, order, blas_rows):
    """Steps t0 .. t1 - 1 (see the module docstring) -> (exit code, next t).

    Samples (``prev``, ``forced``, ``x``) are float64: mu-law codes, or PCM values for a mixture head
    (``mixtures`` > 0, ``emb`` then (2, R): input weight and bias).
    ``forced`` (B, n_forced): values fed instead of samples for t < n_forced (a prompt, or the whole
    input in teacher-forced mode); ``record``: write each step's combined logits of all rows into
    ``rec[t - rec_base]`` (rows, C).  ``t_resume``: the step whose history frame the caller has just
    computed (its input is already summed: do not sum or stop again).
    """
    rows = h.shape[0]
    channels = logits.shape[1]
    n_layers = wtap.shape[0]
    g2 = addend.shape[1] // n_layers
    for t in range(t0, t1):
        _embed(prev, emb, mixtures > 0, h)
        if pool > 0 and t > 0 and t != t_resume:  # history: sum the frame's inputs; a full frame -> caller
            for b in range(rows):
                for r in range(frame_sum.shape[1]):
                    frame_sum[b, r] += h[b, r]
            if t % pool == 0:
                return NEED_HISTORY, t
        for b in range(rows):  # 1-D views: the loops vectorise
            ab, bb = addend[b], bias[b]
            if has_cond:
                cb = condp[t - cond_base, b]
                for o in range(n_layers * g2):
                    ab[o] = bb[o] + cb[o]
            else:
                for o in range(n_layers * g2):
                    ab[o] = bb[o]
        lb = lin_below[t - below_base] if has_below else lin_below[0]
        an = anchor[t - below_base] if has_anchor else anchor[0]
        st = score_taps[t - score_base] if has_score else score_taps[0]
        so = score_on[t - score_base] if has_score else score_on[0]
        _network(t, wtap, dil, ring_off, ring, addend, wsr, bres, bskip, w1, b1, w2, b2, s_tap, s_sr, s1, s2w,
                 h, xin, z, gate, sr, skip, s2, out, blas_rows)
        for b in range(rows):
            if has_lin:
                mu, log_s = _linear(b, t, np.int64(prev[b]), out[b], lin_taps, lin_ring, dec, lb, has_below,
                                    np.float64(an[b]), anchor_keep, st, so,
                                    has_score, score_resid, res_ring, res_prev, adaptive, adapt_w, adapt_ring,
                                    mu_prev, lin_bias, channels,
                                    tail_floor if t >= tail_from else adapt_floor,  # the score has ended: Draw
                                    note_floor,
                                    adapt_gain if t > n_forced else 1.0,  # x[t-1] drawn: its residual rescaled
                                    scale_clip if t > n_forced else 0.0,  # ... and clipped
                                    score_share, share_power)
                _combine(out[b], mu, log_s, n_mu, channels, edges, keep, floor, end_offset, cdf, logits[b])
            else:
                for c in range(channels):
                    logits[b, c] = out[b, c]
        if record:
            for b in range(rows):
                for c in range(channels):
                    rec[t - rec_base, b, c] = logits[b, c]
        all_ended = True
        for b in range(n_batch):
            if t < n_forced:
                xt = forced[b, t]
            elif mixtures > 0:
                xt = _sample_mixture(logits[b], mixtures, temperature, seeds[b], t, lg, probs, scratch, order)
            else:
                for c in range(channels):  # guidance: l_u + (1 + W)(l_c - l_u)
                    v = np.float64(logits[b, c])
                    if twin:
                        lu = np.float64(logits[b + n_batch, c])
                        v = lu + (1.0 + guidance) * (v - lu)
                    lg[c] = v
                if prior_scale > 0.0:
                    g = band[b, t - band_base]
                    for c in range(prior_values.shape[0]):
                        dv = prior_values[c] - g
                        lg[c] -= prior_scale * dv * dv
                confident = False
                if end_code >= 0 and free_length and t >= min_length:
                    mx = lg[0]
                    for c in range(channels):
                        mx = max(mx, lg[c])
                    for c in range(channels):  # exp64 alone in its loop: it vectorises
                        probs[c] = exp64(lg[c] - mx)
                    tot = 0.0
                    for c in range(channels):
                        tot += probs[c]
                    confident = probs[end_code] / tot >= end_threshold
                if end_code >= 0:
                    lg[end_code] = -np.inf
                u = _uniform(seeds[b], t) if temperature > 0.0 else 0.0
                xt = np.float64(_draw(lg, temperature, top_p, u, probs, scratch, order))
                if confident:
                    xt = end_code
                if free_length and end_code >= 0:
                    if xt == end_code and not ended[b]:
                        lengths[b] = t
                        ended[b] = True
                    if ended[b]:
                        xt = silence
            x[b, t] = xt
            prev[b] = xt
            if twin:
                prev[b + n_batch] = xt
            if not ended[b]:
                all_ended = False
        if free_length and all_ended:
            return ALL_ENDED, t + 1
    return DONE, t1
