"""The fused streaming engine: a whole stage's step, and the sampling around it, compiled with numba.

Same function as the reference engine (models/streaming.py + models/sampling.py), without the
dozens of small PyTorch calls per sample: ``models/fused_kernel.py`` runs many steps per call.
What stays in PyTorch is what is computed once per chunk or per frame, by the same model code the
reference uses: the conditioning stack's features (projected into the gates with one matmul per
block), the linear path's tier-below part and the score taps.  The history stack (one step per ``pool``
samples) runs in numba too (``fused_kernel.history_step``, its weights packed by ``pack_history``), between
kernel calls.

- ``unavailable(stage)``: why the fused engine cannot run a stage (None when it can): numba
  missing, a device other than the CPU, a dtype other than float32, or a head other than the
  shipped two (categorical, logistic mixture).  Callers fall back to the reference engine with a
  one-line warning.
- ``FusedStream(stage, rows, cond)``: ``.logits(x)`` teacher-forced logits (the equivalence
  tests), ``.sample(n, draw)`` the sampling loop (``models.sampling.sample_stage`` calls it).

Weights: the per-sample matrices in the stage's format (``models/quant.py``: float32, bf16 or int8 with
per-channel scales; ``pack``); float32 accumulation throughout.

Random numbers: each stream's uniform of step t comes from its own seed (SplitMix64, the
reference's ``models.sampling.stream_uniforms``): same seeds, same samples, whatever the
batching; streams can run in separate groups (``models.sampling.sample_stage``'s ``workers``).
On CUDA the fused engine is not built; generation there uses the reference engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models.anchor import anchor_part
from models.conditioning import Conditioning
from models.draw import Draw, prior_band, prior_values
from models.predictor import ADAPT_FLOOR, UNIFORM_MIX
from models.quant import (
    dequantize_int4,
    dequantize_int8,
    from_bf16,
    quantize_int4,
    quantize_int8,
    stage_weights,
    to_bf16,
)

FUSED_HEADS = ("categorical", "logistic_mixture")  # the heads whose input and sampling the kernel knows
SUB_FLOATS = 1 << 21  # projected conditioning held per block: 8 MB of float32
NEVER = 1 << 62  # the kernel's tail_from when the adaptive scale has no tail floor (Draw.tail_floor)
BLAS_ROWS = 16  # from this many rows the kernel calls BLAS (below: its loops, faster for tiny stages at 8)


def unavailable(stage) -> str | None:
    """Why ``stage`` cannot run on the fused engine, or None."""
    try:
        import numba  # noqa: F401  # local: probes for numba without importing it with models.fused (start-up)
    except ImportError:
        return "numba is not installed (pip install numba)"
    p = next(stage.parameters())
    if p.device.type != "cpu":
        return f"it runs on the CPU only (stage {stage.index} is on {p.device.type})"
    if p.dtype != torch.float32:
        return f"it runs float32 stages only (stage {stage.index} is {p.dtype})"
    if getattr(stage.head, "kind", "") not in FUSED_HEADS:
        return f"it samples {' and '.join(FUSED_HEADS)} heads only (stage {stage.index} has a {stage.head.kind} head)"
    return None


def one_blas_thread():
    """The kernel's BLAS calls (batches from BLAS_ROWS rows) on one thread: the engine runs on one
    core, and OpenBLAS's own threads spin against it on a busy machine (measured: batch 64 ran
    3-4x slower with 2 BLAS threads at load 4)."""
    try:
        from threadpoolctl import threadpool_limits  # local: an ImportError guard (optional package)
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _pad_cols(a: np.ndarray, k: int) -> np.ndarray:
    """(I, O) -> (I, O') with O' the next multiple of k, zeros added."""
    extra = -a.shape[1] % k
    return np.ascontiguousarray(np.pad(a, ((0, 0), (0, extra)))) if extra else a


MATRICES = (("wtap", "s_tap"), ("wsr", "s_sr"), ("w1", "s1"), ("w2", "s2"))  # the per-sample (I, O) matrices


def quantize_packed(w: dict, fmt: str, loops: bool = True) -> dict:
    """The packed matrices (``MATRICES``) in format ``fmt`` (``models/quant.py``): int8 (..., I, O) or int4
    (..., I/2, O) bytes with per-channel float32 scales (..., O), or bf16 as uint16 (``shapes``: each one's
    (I, O)).  ``loops=False`` (rows from BLAS_ROWS up:
    the kernel calls BLAS, which reads float32): the float32 values the format holds."""
    out = dict(w)
    out["shapes"] = {name: w[name].shape[-2:] for name, _ in MATRICES}  # (I, O): int4 packs two inputs to a byte
    for name, sname in MATRICES:
        a = w[name]
        out[sname] = np.ones(a.shape[:-2] + (1,), np.float32)  # placeholder: float32 and bf16 have no scales
        if fmt == "int8":
            q, scale = quantize_int8(a)
            out[name], out[sname] = (q, scale) if loops else (dequantize_int8(q, scale), out[sname])
        elif fmt == "int4":
            q, scale = quantize_int4(a)
            out[name], out[sname] = (q, scale) if loops else (dequantize_int4(q, scale), out[sname])
        elif fmt == "bf16":
            h = to_bf16(a)
            out[name] = h if loops else from_bf16(h)
    out["weights"] = fmt
    return out


def pack(stage, loops: bool = True) -> dict[str, np.ndarray]:
    """The stage's weights in the kernel's layout (``Stage.stream_layout``, as numpy), the per-sample
    matrices in the stage's format (``models.quant.stage_weights``; see ``quantize_packed``)."""
    lay = stage.stream_layout()
    g, s = stage.gate_channels, stage.skip_channels
    n = stage.n_layers
    dil = np.array([d for d, _, _ in lay["layers"]], dtype=np.int64)
    sizes = dil * (stage.kernel_size - 1)
    r = stage.residual_channels
    wsr = np.zeros((n, g, s + r), np.float32)  # [skip | residual] on the gate; no residual after the last layer
    bres = np.zeros((n, r), np.float32)
    skip = _f32(lay["w_skip"]).reshape(n, g + 1, s)  # weights, then the bias row
    wsr[:, :, :s] = skip[:, :g]
    for i, (_, _, wr) in enumerate(lay["layers"]):
        if wr is not None:
            wsr[i, :, s:], bres[i] = _f32(wr[:g]), _f32(wr[g])
    layer = stage.input_layer
    mixture = stage.head.kind == "logistic_mixture"  # input: a PCM value through Linear(1, R)
    w = {
        "emb": np.stack([_f32(layer.weight[:, 0]), _f32(layer.bias)]) if mixture else _f32(layer.weight),  # (V | 2, R)
        "mixtures": int(stage.head.mixtures) if mixture else 0,
        # (L, k*R, 2G): rows of the lag-0 tap, then lag d, .., d(k-1)
        "wtap": np.ascontiguousarray(np.stack([np.concatenate([_f32(w) for w in taps])
                                               for _, taps, _ in lay["layers"]])),
        "dil": dil, "ring_off": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        "ring_slots": int(max(sizes.sum(), 1)),
        "wsr": wsr, "bres": bres, "bskip": np.ascontiguousarray(skip[:, g].sum(0)),
        "w1": _f32(lay["w_out1"]), "b1": _f32(lay["b_out1"]),
        # out2 (+ the linear path's rows), zero-padded to whole 16-float vectors (the kernel's loops)
        "w2": _pad_cols(_f32(lay["w_out2"]), 16), "b2": _pad_cols(_f32(lay["b_out2"])[None], 16)[0],
        "w_cond": lay.get("w_cond"), "w_hist": lay.get("w_hist"), "lin_bias": float(lay.get("lin_bias", 0.0)),
    }
    return quantize_packed(w, stage_weights(stage), loops)


def pack_history(hist) -> dict[str, np.ndarray]:
    """The history stack's weights (``models/context.py`` ``HistoryStack``) in ``history_step``'s layout:
    the input projection (R, C), and per layer the dilated conv's taps as one (k*C, 2C) matrix whose row block
    j reads the input j*d frames back (the conv's tap k - 1 - j), its bias, the residual 1x1 conv as (C, C)."""
    stack = hist.stack
    k = stack.kernel_size
    dil = np.array(stack.dilations, np.int64)
    spans = np.array([stack.span(i) for i in range(len(stack.dilations))], np.int64)
    wconv = np.stack([np.concatenate([_f32(conv.weight[:, :, k - 1 - j].t()) for j in range(k)])
                      for conv in stack.convs])  # (L, k*C, 2C)
    return {"w_in": _f32(hist.in_proj.weight.t()), "b_in": _f32(hist.in_proj.bias), "dil": dil, "spans": spans,
            "ring_off": np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64),
            "wconv": np.ascontiguousarray(wconv), "bconv": np.stack([_f32(conv.bias) for conv in stack.convs]),
            "wres": np.stack([_f32(res.weight[:, :, 0].t()) for res in stack.res]),
            "bres": np.stack([_f32(res.bias) for res in stack.res])}


class FusedStream:
    """One stage streamed by the fused kernel for ``rows`` rows conditioned on ``cond`` (as
    ``Stage.streaming``); use it once: ``logits`` or ``sample``."""

    def __init__(self, stage, rows: int, cond: Conditioning | None = None, chunk: int = 4096,
                 blas_rows: int | None = None, wait_below: Callable[[int], None] | None = None) -> None:
        reason = unavailable(stage)
        if reason is not None:
            raise RuntimeError(f"fused engine: {reason}")
        if stage.training:
            raise RuntimeError("fused engine: the stage is in training mode; call stage.eval() first")
        self.stage, self.rows = stage, int(rows)
        self.wait_below = wait_below  # a tier below still being written (a pipelined cascade)
        self.blas_rows = int(BLAS_ROWS if blas_rows is None else blas_rows)
        cond = cond if cond is not None else Conditioning()
        self.w = pack(stage, loops=self.rows < self.blas_rows)
        self._condp_buf = None  # (sub, rows, L*2G) float32: the conditioning projection, reused per block
        with torch.no_grad():
            self._setup(cond, chunk)

    # ------------------------------------------------------------------ setup
    def _mask(self, m):
        if m is None:
            return None
        m = torch.as_tensor(m).bool()
        return m.expand(self.rows) if m.dim() == 0 else m

    def _setup(self, cond: Conditioning, chunk: int) -> None:
        st, rows = self.stage, self.rows
        self.const = st.gate_bias(cond.genre, rows, torch.device("cpu")).detach().float()  # (rows, L*2G)
        self.bias = _f32(self.const)
        self.timbre_rows = st.timbre_ids(cond.genre, rows, torch.device("cpu"))  # (rows,): the score taps' envelope
        self.below = None if cond.below is None else torch.as_tensor(cond.below).long()
        if self.below is not None and self.below.dim() == 1:
            self.below = self.below.expand(rows, -1)
        self.roll = None if cond.roll is None else torch.as_tensor(cond.roll)
        if self.roll is not None and self.roll.dim() == 2:
            self.roll = self.roll.expand(rows, -1, -1)
        self.drop_below, self.drop_roll = self._mask(cond.drop_below), self._mask(cond.drop_roll)
        self.cond = st.conditioning
        up = self.cond.up if self.cond is not None else 1
        self.chunk = max(up, -(-int(chunk) // up) * up)  # a multiple of up, as the reference stream's
        self._setup_linear(cond)
        self._setup_history(cond)

    def _setup_linear(self, cond: Conditioning) -> None:
        lin, rows = self.stage.linear, self.rows
        self.lin = lin
        if lin is None:
            return
        self.fallback = lin.fallback_rows(self.below, self._mask(cond.drop_linear), rows)  # (rows,) or None
        taps = lin.past_weight.detach().float().expand(rows, -1)
        if self.fallback is not None:
            taps = torch.where(self.fallback[:, None], lin.fallback_weight.detach().float()[None], taps)
        self.lin_taps = _f32(taps)  # (rows, P)
        self.edges = np.ascontiguousarray(lin.bin_hi.double().numpy()[:-1])  # (classes - 1,) the bins' inner edges
        self.adapt_w = (lin.adapt_weight.double().numpy() if lin.adaptive else np.zeros(1))

    def _setup_history(self, cond: Conditioning) -> None:
        self.hist = self.stage.history
        if self.hist is None:
            return
        self.drop_history = self._mask(cond.drop_history)
        self.hist_w = pack_history(self.hist)
        c, rows = self.hist.channels, self.rows
        k = self.hist.stack.kernel_size
        self.hist_n = 0  # frames stepped
        self.hist_ring = np.zeros((int(self.hist_w["spans"].sum()), rows, c), np.float32)
        self.hist_work = [np.zeros(sh, np.float32) for sh in ((rows, c), (rows, k * c), (rows, 2 * c), (rows, c),
                                                              (rows, c))]  # h xin z gate y
        self._set_history(self.hist.first(self.rows))

    def _set_history(self, u: torch.Tensor) -> None:
        """History feature u (rows, H) for the coming frame -> the gate bias."""
        u = self.hist.cut_rows(u, self.drop_history)
        self.bias = _f32(self.const + F.linear(u, self.w["w_hist"]))

    # ------------------------------------------------------------------ per chunk / block (PyTorch)
    def _chunk(self, t: int) -> None:
        """Conditioning features, tier-below part and score taps of the chunk holding step t."""
        rows, n = self.rows, self.chunk
        c0 = t - t % n
        self.c0, self.c1 = c0, c0 + n
        if self.wait_below is not None and self.below is not None:
            # the chunk reads the tier below up to j1 + lookahead (conditioning), + ahead (linear
            # path), + 1 (the prior's interpolation)
            up = self.cond.up if self.cond is not None else self.stage.factor
            ahead = max(self.cond.lookahead if self.cond is not None else 0,
                        self.lin.ahead if self.lin is not None else 0)
            self.wait_below(min(self.below.shape[1], (c0 + n) // up + ahead + 2))
        self.feats = None
        if self.cond is not None:
            up = self.cond.up
            local = Conditioning(below=self.below, roll=self.roll, drop_below=self.drop_below,
                                 drop_roll=self.drop_roll)
            f = self.cond.features(rows, local, c0 // up, (c0 + n) // up)  # (rows, Cc, n)
            self.feats = f.permute(2, 0, 1).contiguous()  # (n, rows, Cc)
        self.lin_below = np.zeros((1, rows), np.float32)
        self.anchor = np.zeros((1, rows), np.float32)
        self.score_taps, self.score_on = np.zeros((1, rows, 1), np.float32), np.zeros((1, rows), np.float32)
        if self.lin is None:
            return
        up = self.cond.up if self.cond is not None else 1
        y = self.lin.below_part(self.below, self.fallback, c0 // up, (c0 + n) // up, rows)
        self.has_below = y is not None
        if y is not None:
            self.lin_below = _f32(y.t())  # (n, rows)
        a = anchor_part(self.lin, self.below, c0 // up, (c0 + n) // up, up, *self.anchor_mix)
        self.has_anchor = a is not None
        if a is not None:
            self.anchor = _f32(a.t())  # (n, rows): the anchored scale's part (models/anchor.py)
        self.has_score = self.stage.score is not None
        if self.has_score:
            taps, on = self.stage.score.sample_taps(self.roll, self.drop_roll, c0, c0 + n, rows, torch.float32,
                                                    genre=self.timbre_rows)
            self.score_taps, self.score_on = _f32(taps.transpose(0, 1)), _f32(on.t())  # (n, rows, Q), (n, rows)

    def _block(self, t: int, n: int) -> int:
        """Prepare the block starting at step t; returns its end (exclusive)."""
        if not hasattr(self, "c0") or t >= self.c1:
            self._chunk(t)
        end = min(n, self.c1)
        if self.feats is not None:
            lg2 = self.w["w_cond"].shape[1]
            sub = max(8, min(self.chunk, SUB_FLOATS // max(1, self.rows * lg2)))
            end = min(end, t + sub)
            f = self.feats[t - self.c0:end - self.c0]  # (m, rows, Cc)
            if self._condp_buf is None or self._condp_buf.shape[0] < sub:
                self._condp_buf = torch.empty(sub, self.rows, lg2)  # reused: no fresh pages every block
            out = self._condp_buf[:end - t]
            torch.matmul(f, self.w["w_cond"], out=out)
            self.condp = out.numpy()  # (m, rows, L*2G)
        else:
            self.condp = np.zeros((1, 1, 1), np.float32)
        self.cond_base = t
        return end

    def _band(self, draw: Draw, t0: int, t1: int) -> np.ndarray:
        """The tier prior's centre for steps [t0, t1) of the B streams (float32 (B, t1 - t0))."""
        if draw.prior_scale <= 0:
            return np.zeros((1, 1), np.float32)
        return _f32(prior_band(self.below[: draw.batch], self.stage.factor, self.stage.classes, t0, t1))

    def _history(self) -> None:
        """A frame of the history stack completed (its inputs are summed in ``frame_sum``)."""
        from models.fused_kernel import history_step  # local: start-up (numba, optional)

        w, (h, xin, z, gate, y) = self.hist_w, self.hist_work
        history_step(self.frame_sum / np.float32(self.hist.pool), w["w_in"], w["b_in"], self.hist_n, self.hist_ring,
                     w["ring_off"], w["spans"], w["dil"], w["wconv"], w["bconv"], w["wres"], w["bres"], h, xin, z,
                     gate, y)
        self.hist_n += 1
        self.frame_sum[:] = 0.0
        with torch.no_grad():
            self._set_history(torch.from_numpy(h.copy()))

    # ------------------------------------------------------------------ the loops
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: x (rows, T) codes -> (rows, C, T) logits, as ``Stage.forward``."""
        x = torch.as_tensor(x)
        with one_blas_thread():
            out = self._run(x.shape[1], Draw(batch=self.rows, temperature=0.0), forced=x, record=True)
        return torch.from_numpy(out["rec"]).permute(1, 2, 0)

    def sample(self, n: int, draw: Draw, prompt: torch.Tensor | None = None,
               progress: Callable[[int], None] | None = None,
               publish: Callable[[np.ndarray, int], None] | None = None) -> tuple[torch.Tensor, list[int], int]:
        """``n`` steps sampled as ``draw`` says (a prompt (B, P) is fed for t < P) -> (x (B, n),
        lengths, steps): steps < n when every stream ended (silence after each end).
        ``publish(x, t)``: after each kernel call, samples [0, t) of x (B, n) float64 are final."""
        with one_blas_thread():
            out = self._run(n, draw, forced=prompt, record=False, progress=progress, publish=publish)
        dtype = torch.float32 if self.w["mixtures"] else torch.int64  # PCM values or mu-law codes
        return torch.from_numpy(out["x"]).to(dtype), [int(v) for v in out["lengths"]], out["steps"]

    def _run(self, n: int, draw: Draw, forced: torch.Tensor | None, record: bool,
             progress: Callable[[int], None] | None = None, publish=None) -> dict:
        """Blocks of steps through the kernel; PyTorch between them (chunks, history frames)."""
        from models.fused_kernel import ALL_ENDED, NEED_HISTORY, run_steps  # local: start-up (numba, optional)

        # samples travel as float64: mu-law codes, or PCM values for a mixture head
        b, channels, silence = draw.batch, self.stage.head.channels, float(self.stage.start_code)
        n_forced = 0 if forced is None else int(forced.shape[1])
        forced_np = (np.ascontiguousarray(forced.double().numpy()) if n_forced else np.zeros((1, 1)))
        res = {"x": np.full((b, n), silence), "lengths": np.full(b, n, np.int64), "steps": n,
               "rec": np.zeros((n, self.rows, channels) if record else (1, 1, 1), np.float32)}
        ended, prev = np.zeros(b, np.bool_), np.full(self.rows, silence)
        self.anchor_mix = (float(draw.scale_anchor), float(draw.anchor_ratio))  # read by _chunk
        net, lin, work = self._network_state(), self._linear_state(draw), self._work_buffers()
        resid = self._residual_state()
        self.frame_sum = np.zeros((self.rows, self.stage.residual_channels), np.float32)  # history: a frame's inputs
        pool = self.hist.pool if self.hist is not None else 0
        choose, rule = self._draw_args(draw), self._draw_rule(draw)
        t = 0
        while t < n:
            end = self._block(t, n)
            band = self._band(draw, t, end)
            t_resume, t_block = -1, t
            while t < end:
                code, t_next = run_steps(
                    t, end, t_resume, b,
                    *net[:5], self.bias, self.condp, self.cond_base, self.feats is not None, *net[5:],
                    lin[0], lin[1], lin[2], lin[3], self.lin_below, self.c0, getattr(self, "has_below", False),
                    self.anchor, getattr(self, "has_anchor", False), 1.0 - self.anchor_mix[0],
                    self.score_taps, self.score_on, self.c0, getattr(self, "has_score", False), *resid, *lin[4:],
                    pool, self.frame_sum,
                    prev, forced_np, n_forced, record, res["rec"], 0, *choose, band, t_block, *rule,
                    res["x"], ended, res["lengths"], silence, self.w["mixtures"], *work, self.blas_rows)
                if code == ALL_ENDED:  # every stream ended
                    return {**res, "steps": t_next}
                if code == NEED_HISTORY:
                    self._history()
                    t_resume = t_next
                t = t_next
                if publish is not None:
                    publish(res["x"], t)
                if progress is not None:
                    progress(t)
        return res

    def _network_state(self) -> tuple:
        """Kernel arguments of the main stack: weights and the (zeroed) layer rings."""
        w, st = self.w, self.stage
        ring = np.zeros((w["ring_slots"], self.rows, st.residual_channels), np.float32)
        return (w["emb"], w["wtap"], w["dil"], w["ring_off"], ring,  # then bias, conditioning (per block)
                w["wsr"], w["bres"], w["bskip"], w["w1"], w["b1"], w["w2"], w["b2"],
                w["s_tap"], w["s_sr"], w["s1"], w["s2"])

    def _linear_state(self, draw: Draw) -> tuple:
        """Kernel arguments of the linear path (placeholders without one)."""
        lin, rows = self.lin, self.rows
        if lin is None:
            z32, z64 = np.zeros((rows, 2), np.float32), np.zeros((rows, 2))
            return (False, z32, z32.copy(), np.zeros(1, np.float32), False, np.zeros(1), z64, np.zeros((rows, 2)), 0.0,
                    ADAPT_FLOOR, ADAPT_FLOOR, NEVER, 0.0, 1.0, 0.0, 0.0, 1.0, np.zeros(1), 1.0, 1.0, 0.0,
                    self.stage.head.channels)
        la = lin.adapt_taps if lin.adaptive else 1
        return (True, self.lin_taps, np.zeros((rows, 2 * lin.order), np.float32), lin.decode_table.numpy(),
                # then below part and score taps (per chunk); the rings hold each value twice (the kernel's _linear)
                bool(lin.adaptive), self.adapt_w, np.zeros((rows, 2 * la)), np.zeros((rows, 2)), self.w["lin_bias"],
                float(draw.adapt_floor or lin.adapt_floor),
                float(draw.tail_floor),  # read from draw.tail_start on only
                NEVER if draw.tail_start is None else draw.tail_start,
                float(draw.note_floor or lin.note_floor), draw.adapt_gain,
                float(draw.scale_clip),
                float(draw.score_share), float(draw.share_power), self.edges,
                1.0 - UNIFORM_MIX, UNIFORM_MIX / lin.classes,
                lin.end_offset, lin.classes)

    def _residual_state(self) -> tuple:
        """Kernel arguments of the score taps on the residual (stages with a tier below): the flag,
        the doubled ring of the last Q residuals and mu_lin(t-1) + bias per row (placeholders without)."""
        st, rows = self.stage, self.rows
        if st.score is None or not st.score_on_residual:
            return False, np.zeros((rows, 2), np.float32), np.zeros(rows)
        return True, np.zeros((rows, 2 * st.score.order), np.float32), np.zeros(rows)

    def _work_buffers(self) -> list[np.ndarray]:
        """The kernel's scratch arrays, allocated once per run."""
        from models.fused_kernel import TOP_P_BUCKETS  # local: start-up (numba, optional)

        st, rows = self.stage, self.rows
        r, g2, s, c = st.residual_channels, 2 * st.gate_channels, st.skip_channels, st.head.channels
        shapes = self.w["shapes"]
        co = shapes["w2"][1]
        f32 = [(rows, r), (rows, shapes["wtap"][0]), (rows, g2), (rows, g2 // 2),  # h xin z gate
               (rows, shapes["wsr"][1]), (rows, s), (rows, s), (rows, co),  # sr skip s2 out
               (rows, self.w["wtap"].shape[0] * g2), (rows, c)]  # addend logits
        f64 = [(c,), (c,), (c,), (TOP_P_BUCKETS,)]  # lg probs cdf, the top-p cut's bucket masses
        return ([np.zeros(sh, np.float32) for sh in f32] + [np.zeros(sh) for sh in f64]
                + [np.zeros(c, np.int64)])  # the top-p cut's boundary classes

    @staticmethod
    def _draw_args(draw: Draw) -> tuple:
        """Kernel arguments of the sampling rule."""
        seeds = np.zeros(draw.batch, np.uint64) if draw.seeds is None else np.ascontiguousarray(draw.seeds, np.uint64)
        return (seeds, draw.twin, float(draw.guidance))

    def _draw_rule(self, draw: Draw) -> tuple:
        """Kernel arguments after the tier prior's centre: its grid, then END and sampling settings."""
        values = prior_values(self.stage.classes).double().numpy() if draw.prior_scale > 0 else np.zeros(1)
        return (float(draw.prior_scale), values,
                -1 if draw.end_code is None else int(draw.end_code), draw.free_length, int(draw.min_length),
                float(draw.end_threshold), float(draw.temperature), float(draw.top_p))
