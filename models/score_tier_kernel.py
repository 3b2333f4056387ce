"""A numba kernel for one sampling step of the score tier's Transformer blocks (models/score_tier.py).

``ScoreTransformer._step`` runs a step of sampling as ~60-80 tiny torch ops (per block: layer norm, qkv,
the cache write, attention, proj, layer norm, MLP); at the tiny preset's width (128) each op's dispatch
costs more than its arithmetic, so a step took ~0.9 ms with one row and ~1.1-1.5 ms with guidance's two.  Here
the blocks, ``ln_f`` and the head run in one compiled call (``np.dot``: BLAS for the weight products, loops
for attention and the rest; tiny preset, one thread: 0.13-0.18 ms against torch's 0.7-1.0), on the weights
packed once (``StepKernel.from_model``) and a numpy copy of the key/value cache taken after each torch prefill
(``StepKernel.load``).  The step's input (the summed embeddings, ``ScoreTransformer._embed_step``) and the draw
stay in torch.  Equal to ``_step`` within float tolerance (tests/models/test_score_tier_kernel.py).

Shapes: B rows (1, or 2 with guidance's "no genre" twin), W width, H heads, D = W // H, L layers, C context,
V vocabulary.  Everything float32 but the layer norms' statistics, the softmax sums and GELU's erf (float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

SQRT1_2 = 1.0 / math.sqrt(2.0)
# reassociation and contraction only (the dot products and sums vectorise); no "nnan"/"ninf"
FASTMATH = {"reassoc", "contract"}


@njit(cache=True, fastmath=FASTMATH)
def _layer_norm(x, w, b, eps, out):
    """out (W,) = layer norm of x (W,) with weight w (W,), bias b (W,) (torch's: biased variance)."""
    width = x.shape[0]
    s = 0.0
    for i in range(width):
        s += x[i]
    mean = s / width
    v = 0.0
    for i in range(width):
        d = x[i] - mean
        v += d * d
    inv = 1.0 / math.sqrt(v / width + eps)
    for i in range(width):
        out[i] = (x[i] - mean) * inv * w[i] + b[i]


@njit(cache=True, fastmath=FASTMATH)
def _attend(q, k, v, m, scale, s, out):
    """One head of one row: out (D,) = softmax(k[:m] q * scale) v[:m], q (D,), k, v (C, D), s (C,) scratch.
    Loops, not BLAS: a call per head per row cost more than its 2 m D products (measured)."""
    d = q.shape[0]
    top = -np.inf
    for j in range(m):
        kj = k[j]
        acc = np.float32(0.0)
        for i in range(d):
            acc += q[i] * kj[i]
        s[j] = acc * scale
        top = max(top, s[j])
    total = 0.0
    for j in range(m):
        s[j] = math.exp(s[j] - top)
        total += s[j]
    inv = np.float32(1.0 / total)
    for i in range(d):
        out[i] = 0.0
    for j in range(m):
        pj, vj = s[j] * inv, v[j]
        for i in range(d):
            out[i] += pj * vj[i]


@njit(cache=True, fastmath=FASTMATH)
def step_blocks(x, ln, eps, qkv_w, qkv_b, proj_w, proj_b, up_w, up_b, down_w, down_b, head_w, kc, vc, n):
    """The blocks, ``ln_f`` and the head for one event of B rows after ``n`` cached positions -> logits (B, V).

    x (B, W) the step's input embeddings (modified: the residual stream); ln (2L + 1, 2, W) the layer norms'
    weight and bias (ln1 of layer l at 2l, ln2 at 2l + 1, ln_f last), eps (2L + 1,) their eps; per layer l:
    qkv_w (L, W, 3W), qkv_b (L, 3W), proj_w (L, W, W), proj_b (L, W), up_w (L, W, 4W), up_b (L, 4W),
    down_w (L, 4W, W), down_b (L, W) (torch's Linear weights transposed: y = x @ w + b); head_w (W, V) (tied
    to the token embedding, no bias).  kc, vc (L, B, H, C, D): the cache; this step's key and value are
    written at position n first and attention reads positions 0..n (``KVCache.extend``; n < C: a full cache
    raises, as ``extend``'s write into no room does).
    """
    n_layers, rows, n_heads, context, d = kc.shape
    width = x.shape[1]
    if n >= context:
        raise ValueError("score tier kernel: the key/value cache is full (the window should have slid)")
    scale = np.float32(1.0 / math.sqrt(d))
    h = np.empty_like(x)  # (B, W) layer norm outputs
    y = np.empty_like(x)  # (B, W) attention outputs, heads side by side
    s = np.empty(context, np.float32)  # attention scores of one head
    for layer in range(n_layers):
        for r in range(rows):
            _layer_norm(x[r], ln[2 * layer, 0], ln[2 * layer, 1], eps[2 * layer], h[r])
        qkv = np.dot(h, qkv_w[layer])  # (B, 3W): q, k, v
        for r in range(rows):
            z, bias = qkv[r], qkv_b[layer]
            for j in range(3 * width):
                z[j] += bias[j]
            for a in range(n_heads):
                kc[layer, r, a, n] = z[width + a * d:width + (a + 1) * d]  # the new position first
                vc[layer, r, a, n] = z[2 * width + a * d:2 * width + (a + 1) * d]
                _attend(z[a * d:(a + 1) * d], kc[layer, r, a], vc[layer, r, a], n + 1, scale, s,
                        y[r, a * d:(a + 1) * d])
        z = np.dot(y, proj_w[layer])  # (B, W)
        for r in range(rows):
            xr, zr, bias = x[r], z[r], proj_b[layer]
            for i in range(width):
                xr[i] += zr[i] + bias[i]
            _layer_norm(xr, ln[2 * layer + 1, 0], ln[2 * layer + 1, 1], eps[2 * layer + 1], h[r])
        u = np.dot(h, up_w[layer])  # (B, 4W)
        for r in range(rows):
            ur, bias = u[r], up_b[layer]
            for j in range(ur.shape[0]):
                g = ur[j] + bias[j]
                ur[j] = 0.5 * g * (1.0 + math.erf(g * SQRT1_2))  # exact GELU
        z = np.dot(u, down_w[layer])  # (B, W)
        for r in range(rows):
            xr, zr, bias = x[r], z[r], down_b[layer]
            for i in range(width):
                xr[i] += zr[i] + bias[i]
    for r in range(rows):
        _layer_norm(x[r], ln[2 * n_layers, 0], ln[2 * n_layers, 1], eps[2 * n_layers], h[r])
    return np.dot(h, head_w)  # (B, V)


# widths above this step faster in torch (one thread, one BLAS thread, 300 guided events of a random model: width 256
# 3.8 ms per event against torch's 8.0, width 512 48.6 against 37.6): there the matrix products outweigh the ops'
# overhead, and torch's are faster than the BLAS numba calls
MAX_WIDTH = 256


def unavailable(model) -> str | None:
    """Why ``model`` (a ScoreTransformer) should not step on the kernel, or None: it runs float32 weights on the CPU
    only, and is slower than torch above ``MAX_WIDTH`` (``_step`` runs the rest)."""
    if model.cfg.width > MAX_WIDTH:
        return f"torch steps faster at width {model.cfg.width} (> {MAX_WIDTH})"
    p = model.tok.weight
    if p.device.type != "cpu":
        return f"it runs on the CPU only (the model is on {p.device.type})"
    if p.dtype != torch.float32:
        return f"it runs float32 models only (the model is {p.dtype})"
    return None


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


class StepKernel:
    """A ScoreTransformer's blocks and head packed for ``step_blocks``, and its numpy key/value cache."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = weights  # step_blocks' arguments by name
        self.kc: np.ndarray | None = None  # (L, B, H, C, D)
        self.vc: np.ndarray | None = None
        self.n = 0  # positions filled

    @classmethod
    def from_model(cls, model) -> "StepKernel":
        """Pack ``model``'s weights (copies: a later change to the model is not seen)."""
        blocks = list(model.blocks)
        norms = [ln for b in blocks for ln in (b.ln1, b.ln2)] + [model.ln_f]

        def stack(get) -> np.ndarray:
            return np.ascontiguousarray(np.stack([get(b) for b in blocks]))

        w = {"ln": np.ascontiguousarray(np.stack([np.stack([_f32(ln.weight), _f32(ln.bias)]) for ln in norms])),
             "eps": np.array([ln.eps for ln in norms], dtype=np.float64),
             "qkv_w": stack(lambda b: _f32(b.attn.qkv.weight.T)), "qkv_b": stack(lambda b: _f32(b.attn.qkv.bias)),
             "proj_w": stack(lambda b: _f32(b.attn.proj.weight.T)), "proj_b": stack(lambda b: _f32(b.attn.proj.bias)),
             "up_w": stack(lambda b: _f32(b.mlp[0].weight.T)), "up_b": stack(lambda b: _f32(b.mlp[0].bias)),
             "down_w": stack(lambda b: _f32(b.mlp[2].weight.T)), "down_b": stack(lambda b: _f32(b.mlp[2].bias)),
             "head_w": _f32(model.head.weight.T)}
        return cls(w)

    def load(self, caches) -> None:
        """Take over the torch caches (one ``KVCache`` per layer, each ``k``, ``v`` (B, H, C, D), ``n`` filled)
        of a prefill: the kernel's steps continue from them."""
        k0 = caches[0].k
        shape = (len(caches),) + tuple(k0.shape)
        if self.kc is None or self.kc.shape != shape:
            self.kc, self.vc = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for i, c in enumerate(caches):
            self.kc[i] = c.k.detach().cpu().numpy()
            self.vc[i] = c.v.detach().cpu().numpy()
        self.n = caches[0].n

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """The input embeddings x (B, W) of one event -> logits (B, V), the cache extended by it."""
        w = self.w
        xs = np.array(x.detach().cpu().numpy(), dtype=np.float32, order="C")  # a copy: the kernel adds into it
        out = step_blocks(xs, w["ln"], w["eps"], w["qkv_w"], w["qkv_b"], w["proj_w"], w["proj_b"], w["up_w"],
                          w["up_b"], w["down_w"], w["down_b"], w["head_w"], self.kc, self.vc, self.n)
        self.n += 1
        return torch.from_numpy(out)
