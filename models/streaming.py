"""Streaming (queue) inference for a Stage: one step costs O(layers), never O(receptive field).

The step uses the stage's own parameters, laid out once per stream for a lean step:

- dilated conv of layer i (kernel k, dilation d): the new input h_t is multiplied once by all
  k taps, W_i = [tap lag 0 | lag d | ... | lag d(k-1)] (R, k*2G).  The lag-0 part is used now;
  the lag-d*j parts are what time t + d*j will need, kept in a per-layer ring of d*(k-1) slots
  (the queue of past inputs, stored already projected);
- the gate addend (conv bias + genre + history frame) is a (B, L*2G) vector updated once per
  history frame; the tier-below/roll features are computed by the conditioning stack in chunks
  of ``chunk`` stage samples (with the halo that makes them equal to the full pass) and
  projected per step with one matmul for all layers;
- the gate outputs of all layers sit in one (B, L, G+1) buffer whose last column is 1, so the
  residual bias and all skip projections + biases are single matmuls;
- linear-prediction path (models/predictor.py): a ring of the last P decoded inputs times
  pre-rotated taps (one P-tap dot product per row: the joint taps, or the fallback taps for rows
  whose tier below is dropped), the tier-below part computed per chunk alongside the
  conditioning features, then the shared ``LinearPath.combine`` (C sigmoid pairs); with an
  adaptive scale, a ring of the last L |residuals| of the linear part (|r(t-1)| pushed at step t
  from x[t-1] and the kept mu_lin(t-1)) times pre-rotated window weights; with score taps in a
  stage with a tier below, a ring of the last Q residuals of the linear part times the frame's
  pre-rotated score taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.anchor import anchor_part
from models.conditioning import Conditioning
from models.predictor import ADAPT_FLOOR


class StageStream:
    """``with stage.streaming(batch=B, cond=Conditioning(...)) as s: out_t = s.step(x_prev)``.

    ``cond`` (models/conditioning.py) as for ``Stage.forward``: below (B, T // factor) and roll
    (B, 256, F) cover the whole piece; genre (B,) or int; drop flags (B,) bool.
    ``step`` takes x[t-1] (start_code at the first call) and returns the output for sample t: (B, C).
    """

    def __init__(self, stage, batch: int = 1, cond: Conditioning | None = None, chunk: int = 4096) -> None:
        if stage.training:
            raise RuntimeError("Stage.streaming: the stage is in training mode; call stage.eval() first "
                               "(streaming is for inference and must equal the eval forward pass)")
        self.stage, self.batch = stage, int(batch)
        self.closed = False
        # sampling knobs (``models.draw.Draw``; ``sample_stage`` sets them): the factor on a drawn sample's |residual|
        # before the adaptive scale reads it (samples t < n_forced are given, not drawn), the score taps' fixed share
        self.adapt_gain, self.n_forced, self.score_share = 1.0, 0, 0.0
        self.anchor = (0.0, 0.0)  # (mix, ratio) of the anchored scale (models/anchor.py)
        self.share_power = 1.0  # the network's share of the score taps raised to this power
        self.scale_clip = 0.0  # > 0: the |residual| the adaptive scale reads, at most this times the draw's scale
        self.note_floor = 0.0  # > 0: the scale's floor where notes sound (Draw.note_floor), else the stage's trained
        # the adaptive scale's floor everywhere (Draw.adapt_floor, else the stage's trained one) ...
        self.adapt_floor = stage.linear.adapt_floor if stage.linear is not None else ADAPT_FLOOR
        self.tail_floor, self.tail_start = 0.0, None  # ... but from sample tail_start on (Draw.tail_floor, tail_start)
        self.anchor_buf = None  # (chunk, B) mix * ratio * level of the tier below (None: no anchor)
        p = next(stage.parameters())
        self.device, self.dtype = p.device, p.dtype
        cond = cond if cond is not None else Conditioning()
        with torch.no_grad():
            self._setup(cond.genre, cond.below, cond.roll, cond.drop_below, cond.drop_roll, cond.drop_history,
                        cond.drop_linear, chunk)

    # ------------------------------------------------------------------ setup
    def _mask(self, m):
        if m is None:
            return None
        m = torch.as_tensor(m, device=self.device).bool()
        return m.expand(self.batch) if m.dim() == 0 else m

    def _setup(self, genre, below, roll, drop_below, drop_roll, drop_history, drop_lin, chunk) -> None:
        st = self.stage
        self.t = 0
        self.g2 = 2 * st.gate_channels
        self.embed_step = st.head.stream_input(st.input_layer, self.dtype)  # (x_prev (B,), out (B, R))
        lay = st.stream_layout()  # the stage's weights in the fused layout (Stage.stream_layout)
        self._setup_main(lay)
        self._setup_linear(lay, below, drop_lin)
        # constant gate addend (conv bias + genre): (B, L*2G)
        self.const = st.gate_bias(genre, self.batch, self.device).detach().contiguous()
        self.timbre_rows = st.timbre_ids(genre, self.batch, self.device)  # (B,): the score taps' envelope rows
        self.bias = self.const
        self.add_buf.copy_(self.bias)
        self._setup_conditioning(lay, below, roll, drop_below, drop_roll, chunk)
        self._setup_history(lay, drop_history)

    def _new(self, *shape) -> torch.Tensor:
        return torch.zeros(*shape, dtype=self.dtype, device=self.device)

    def _setup_main(self, lay: dict) -> None:
        """Main stack, fused layout with preallocated buffers and views (no per-step allocation)."""
        st, b, new = self.stage, self.batch, self._new
        g, k, n, g2 = st.gate_channels, st.kernel_size, st.n_layers, self.g2
        self.add_buf = new(b, n * g2)  # gate addend of all layers at this step
        self.gall = new(b, n, g + 1)  # (B, L, G+1) gate outputs, last column = 1 (bias rows)
        self.gall[:, :, g] = 1.0
        self.gall_flat = self.gall.view(b, n * (g + 1))
        self.hbuf = [new(b, st.residual_channels) for _ in range(n + 1)]  # residual stream between layers
        self.layers = []
        for i, (d, taps, wr) in enumerate(lay["layers"]):
            m = d * (k - 1)
            ring = new(m, b, g2) if k > 1 else None  # ring[s]: partial sum for the time t with t % m == s
            z = new(b, g2)
            self.layers.append(_Layer(
                w_cur=taps[0], w_taps=taps[1:], m=m, d=d, ring=ring,
                slots=[ring[j] for j in range(m)] if ring is not None else [],
                add=self.add_buf[:, i * g2:(i + 1) * g2], z=z, za=z[:, :g], zb=z[:, g:],
                ta=new(b, g), sb=new(b, g), gate=self.gall[:, i, :g], gfull=self.gall[:, i],
                wr=wr, h_in=self.hbuf[i], h_out=self.hbuf[i + 1]))
        self.w_skip = lay["w_skip"]  # (L*(G+1), S)
        self.w_out1, self.b_out1 = lay["w_out1"], lay["b_out1"]
        self.w_out2, self.b_out2 = lay["w_out2"], lay["b_out2"]  # with the lin_out rows when linear
        self.s1, self.s2 = new(b, st.skip_channels), new(b, st.skip_channels)

    def _setup_linear(self, lay: dict, below, drop_lin) -> None:
        """Linear-prediction path: ring of the last P decoded inputs (zeros = before the start)."""
        st, b, new = self.stage, self.batch, self._new
        self.lin = st.linear
        if self.lin is None:
            return
        below_t = None if below is None else torch.as_tensor(below)
        self.lin_fallback = self.lin.fallback_rows(below_t, self._mask(drop_lin), b)  # (B,) or None
        self.lin_ring = new(b, self.lin.order)
        self.lin_rot = self.lin.past_rotations(self.lin_fallback).to(self.dtype)  # (P, B or 1, P)
        self.lin_buf = None  # (chunk, B) below part of the current chunk (None: no tier below)
        self.lin_bias = lay["lin_bias"]  # the mu bias: part of mu_lin (residuals)
        if self.lin.adaptive:  # ring of the last L |residuals| of the linear part (zeros = before 0)
            self.adapt_ring = new(b, self.lin.adapt_taps)
            self.adapt_rot = self.lin.adapt_rotations().to(self.dtype)  # (L, L)
            self.mu_prev = new(b)  # mu_lin(t-1)
        # score taps (stage 0 with a roll): per chunk, pre-rotated for the ring like lin_rot
        self.score = st.score
        self.score_buf = self.score_on = None  # (chunk, B, Q), (chunk, B)
        self.res_ring = None  # with a tier below: the last Q residuals e = dec(x) - mu_lin - bias
        if self.score is not None:
            q = self.score.order
            self.score_idx = self.lin.ring_lags(q)  # (Q, Q) tap index of each ring slot, as lin_rot
            if st.score_on_residual:
                self.res_ring = new(b, q)
                self.res_prev = new(b)  # mu_lin(t-1) + bias

    def _setup_conditioning(self, lay: dict, below, roll, drop_below, drop_roll, chunk) -> None:
        """Conditioning stack, computed in chunks of ``chunk`` stage samples (a multiple of its ``up``)."""
        b = self.batch
        self.cond = self.stage.conditioning
        if self.cond is None:
            return
        up = self.cond.up
        self.chunk = max(up, -(-int(chunk) // up) * up)  # a multiple of up
        self.below, self.roll = below, roll
        if below is not None:
            below = torch.as_tensor(below, device=self.device).long()
            self.below = below.expand(b, -1) if below.dim() == 1 else below
        if roll is not None:
            roll = torch.as_tensor(roll, device=self.device)
            self.roll = roll.expand(b, -1, -1) if roll.dim() == 2 else roll
        self.drop_below, self.drop_roll = self._mask(drop_below), self._mask(drop_roll)
        self.w_cond = lay["w_cond"]  # (Cc, L*2G)
        self.cond_buf = self._new(self.chunk, b, self.cond.channels)

    def _setup_history(self, lay: dict, drop_history) -> None:
        """History stack, one update per frame."""
        b = self.batch
        self.hist = self.stage.history
        if self.hist is None:
            return
        self.pool = self.hist.pool
        self.drop_history = self._mask(drop_history)
        self.hist_state = self.hist.init_state(b, self.dtype, self.device)
        self.frame_sum = self._new(b, self.stage.residual_channels)
        self.w_hist = lay["w_hist"]  # (L*2G, H)
        self._set_history(self.hist.first(b))

    def _set_history(self, u: torch.Tensor) -> None:
        """History feature u (B, H) for the coming frame -> gate addend."""
        u = self.hist.cut_rows(u, self.drop_history)  # (B, H)
        self.bias = self.const + F.linear(u, self.w_hist)  # (B, L*2G)
        if self.cond is None:
            self.add_buf.copy_(self.bias)

    def _next_chunk(self) -> None:
        up = self.cond.up
        j0 = self.t // up
        local = Conditioning(below=self.below, roll=self.roll, drop_below=self.drop_below, drop_roll=self.drop_roll)
        c = self.cond.features(self.batch, local, j0, j0 + self.chunk // up)  # (B, Cc, chunk)
        self.cond_buf.copy_(c.permute(2, 0, 1))  # (chunk, B, Cc)
        if self.lin is not None:
            y = self.lin.below_part(self.below, self.lin_fallback, j0, j0 + self.chunk // up, self.batch)
            self.lin_buf = None if y is None else y.t().contiguous()  # (chunk, B)
            a = anchor_part(self.lin, self.below, j0, j0 + self.chunk // up, up, *self.anchor)
            self.anchor_buf = None if a is None else a.t().to(self.dtype).contiguous()  # (chunk, B)
            if self.score is not None:
                self._next_score_chunk()

    def _next_score_chunk(self) -> None:
        """Score taps of the chunk's samples, rotated so that step t multiplies the ring directly."""
        t0, n = self.t, self.chunk
        taps, on = self.score.sample_taps(self.roll, self.drop_roll, t0, t0 + n, self.batch, self.dtype,
                                          self.device, self.timbre_rows)
        slot = (torch.arange(t0, t0 + n) % self.score.order).to(taps.device)  # ring slot of the newest input
        idx = self.score_idx.to(taps.device)[slot]  # (n, P): lag - 1 held by each ring slot
        rot = torch.gather(taps, 2, idx.unsqueeze(0).expand(taps.shape[0], -1, -1))  # (B, n, P)
        self.score_buf = rot.transpose(0, 1).contiguous()  # (n, B, P)
        self.score_on = on.t().contiguous()  # (n, B)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> StageStream:
        self.stage._stream = self
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop all state (rings, buffers); the stream cannot step afterwards."""
        self.closed = True
        self.layers = []
        for name in ("gall", "gall_flat", "cond_buf", "hist_state", "frame_sum", "below", "roll", "hbuf",
                     "add_buf", "lin_ring", "lin_buf", "adapt_ring", "mu_prev", "s_prev", "anchor_buf", "score_buf",
                     "score_on", "res_ring"):
            if hasattr(self, name):
                setattr(self, name, None)
        if getattr(self.stage, "_stream", None) is self:
            self.stage._stream = None

    # ------------------------------------------------------------------ the step
    def step(self, x_prev: torch.Tensor) -> torch.Tensor:
        """x_prev (B,) = x[t-1] (start_code at t = 0) -> (B, C) output for sample t."""
        if self.closed:
            raise RuntimeError("this stream is closed (its `with` block ended)")
        with torch.no_grad():
            return self._step(x_prev)

    def _step(self, x_prev: torch.Tensor) -> torch.Tensor:
        t, b = self.t, self.batch
        if not torch.is_tensor(x_prev):
            x_prev = torch.as_tensor(x_prev, device=self.device)
        if x_prev.dim() == 0:
            x_prev = x_prev.expand(b)
        h = self.hbuf[0]
        self.embed_step(x_prev, h)  # (B, R)
        if self.hist is not None and t > 0:
            self.frame_sum += h
            if t % self.pool == 0:  # frame t/pool - 1 just completed
                u = self.hist.step(self.hist_state, self.frame_sum / self.pool)
                self.frame_sum.zero_()
                self._set_history(u)
        if self.cond is not None:
            r = t % self.chunk
            if r == 0:
                self._next_chunk()
            torch.addmm(self.bias, self.cond_buf[r], self.w_cond, out=self.add_buf)  # (B, L*2G)
        mm, addmm = torch.mm, torch.addmm
        for ly in self.layers:
            h = ly.step(h, t)  # (B, R)
        s1 = mm(self.gall_flat, self.w_skip, out=self.s1).relu_()  # (B, S) all skips + biases
        s2 = addmm(self.b_out1, s1, self.w_out1, out=self.s2).relu_()
        self.t = t + 1
        out = addmm(self.b_out2, s2, self.w_out2)  # (B, C [+ 2])
        if self.lin is None:
            return out
        slot = t % self.lin.order
        self.lin_ring[:, slot] = self.lin.decode(x_prev.long())
        mu = (self.lin_ring * self.lin_rot[slot]).sum(1)  # (B,) own-past part (each row's taps)
        if self.lin_buf is not None:
            mu = mu + self.lin_buf[t % self.chunk]
        c = self.stage.head.channels
        log_s = out[:, c + 1]
        if self.score is not None:  # the score taps (Stage.forward)
            r = t % self.chunk
            share = (self.score_share if self.score_share > 0  # Draw.score_share, else Draw.share_power
                     else torch.sigmoid(out[:, c + 2]) ** self.share_power)
            w = share * self.score_on[r]
            if self.res_ring is not None:  # push e(t-1) (none before t = 0), predict e(t)
                if t > 0:
                    self.res_ring[:, t % self.score.order] = self.lin_ring[:, slot] - self.res_prev
                self.res_prev = mu + self.lin_bias
                mu = mu + w * (self.res_ring * self.score_buf[r]).sum(1)
            else:  # blend with the own-past taps
                mu = mu + w * ((self.lin_ring * self.score_buf[r]).sum(1) - mu)
        if self.lin.adaptive:  # push |r(t-1)| = |dec(x[t-1]) - mu_lin(t-1)| (none before t = 0), then s(t)
            a_slot = t % self.lin.adapt_taps
            if t > 0:
                gain = self.adapt_gain if t > self.n_forced else 1.0  # x[t-1] drawn: Draw.adapt_gain
                r = (self.lin_ring[:, slot] - self.mu_prev).abs() * gain
                if self.scale_clip > 0 and t > self.n_forced:  # Draw.scale_clip: at most k x the draw's scale
                    r = torch.minimum(r, self.scale_clip * self.s_prev)
                self.adapt_ring[:, a_slot] = r
            s_adapt = torch.mv(self.adapt_ring, self.adapt_rot[a_slot])  # (B,)
            if self.anchor_buf is not None:  # the anchored scale (models/anchor.py)
                s_adapt = (1.0 - self.anchor[0]) * s_adapt + self.anchor_buf[t % self.chunk]
            tail = self.tail_start is not None and t >= self.tail_start  # the score has ended (Draw.tail_floor)
            s_adapt = (self.tail_floor if tail else self.adapt_floor) + s_adapt
            floor = self.note_floor or self.lin.note_floor
            if self.score is not None and floor:  # where notes sound: the score's floor
                s_adapt = s_adapt + floor * self.score_on[t % self.chunk]
            log_s = self.lin.adapt_log_s(s_adapt, log_s)
            self.mu_prev, self.s_prev = mu + self.lin_bias, torch.exp(log_s)  # the draw's logistic scale
        return self.lin.combine(out[:, :c], out[:, c], log_s, mu)  # (B, C) combined logits


class _Layer:
    """Fused weights, ring and buffer views of one main-stack layer, and its step."""

    __slots__ = ("w_cur", "w_taps", "m", "d", "ring", "slots", "add", "z", "za", "zb", "ta", "sb", "gate",
                 "gfull", "wr", "h_in", "h_out")

    def __init__(self, **kw) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    def step(self, h: torch.Tensor, t: int) -> torch.Tensor:
        """Input h (B, R) at time t -> the residual stream after this layer (B, R); the gate output
        lands in the shared (B, L, G+1) buffer (``gate``), read by the fused skip matmul."""
        z = self.z
        torch.addmm(self.add, h, self.w_cur, out=z)  # (B, 2G): lag-0 tap + addend
        if self.m:
            slot = self.slots[t % self.m]
            z += slot  # older taps, projected when their inputs arrived
            torch.mm(h, self.w_taps[-1], out=slot)  # for time t + d(k-1)
            for j in range(1, len(self.w_taps)):  # kernel > 2: partial sums for t + d*j
                self.slots[(t + self.d * j) % self.m].addmm_(h, self.w_taps[j - 1])
        torch.tanh(self.za, out=self.ta)
        torch.sigmoid(self.zb, out=self.sb)
        torch.mul(self.ta, self.sb, out=self.gate)
        if self.wr is not None:
            h = torch.addmm(h, self.gfull, self.wr, out=self.h_out)  # (B, R) residual (+ bias: ones column)
        return h
