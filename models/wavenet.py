"""One WaveNet stage of the cascade: causal dilated gated stack + context stacks + output head."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import SOURCES, Conditioning
from models.config import StageArchConfig, stage_arch
from models.context import ConditioningStack, HistoryStack
from models.heads import make_head
from models.layers import causal_pad, gated
from models.mulaw import bits_of, mulaw_encode_torch
from models.predictor import LOG_S_ADAPT_INIT, LOG_S_INIT, LinearPath
from models.roll import ROLL_FPS
from models.score import GATE_INIT as SCORE_GATE_INIT, RESIDUAL_GATE_INIT, ScoreTaps
from models.streaming import StageStream


class Stage(nn.Module):
    """Stage ``index`` models tier ``index`` at ``cfg.rate`` Hz.

    ``gate_channels`` is the width of each gate half (the dilated conv outputs 2 * gate_channels:
    tanh half and sigmoid half).  Output t of ``forward`` is the distribution of x[t] given
    x[<t], the tier below up to index t // factor + lookahead, the roll and the genre.
    """

    def __init__(self, cfg: Any, index: int, n_genres: int, factor: int = 1, roll_fps: int = ROLL_FPS,
                 classes: int = 256) -> None:
        super().__init__()
        self.arch: StageArchConfig = stage_arch(cfg)
        self.config = self.arch.to_dict()  # plain dict (stored in model.json)
        c = self.arch
        self.index, self.n_genres, self.factor = int(index), int(n_genres), int(factor)
        self._scale_trace: list | None = None  # record_adaptive_scale
        self.roll_fps, self.classes = int(roll_fps), int(classes)
        self.rate = int(c.rate) if c.rate is not None else None
        r, g, s, k = c.residual_channels, c.gate_channels, c.skip_channels, c.kernel_size
        self.residual_channels, self.gate_channels, self.skip_channels, self.kernel_size = r, g, s, k
        self.dilations = [2**i for _ in range(c.dilation_cycles) for i in range(c.cycle_length)]
        # the parts in this order (parameters are created, and so drawn from the seed, in this order)
        self._build_head(c)
        self._build_main_stack()
        self._build_linear_path(c)
        self._build_genre(c)
        self._build_conditioning(c)
        self._build_history(c)

    def _build_head(self, c: StageArchConfig) -> None:
        """Output head (models/heads.py) and its input layer (kept under the head's ``input_key``)."""
        try:
            self.head = make_head(c, self.classes)
        except ValueError as e:
            raise ValueError(f"stage {self.index}: {e}") from None
        self.end_code = self.head.end_code
        self.start_code = self.head.start_value  # fed before the first sample (silence)
        self.add_module(self.head.input_key, self.head.input_layer(self.residual_channels))

    def _build_main_stack(self) -> None:
        """The causal dilated gated stack and its output layers."""
        r, g, s, k = self.residual_channels, self.gate_channels, self.skip_channels, self.kernel_size
        self.convs = nn.ModuleList(nn.Conv1d(r, 2 * g, k, dilation=d) for d in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(g, r, 1) for _ in self.dilations[1:])  # none after the last
        self.skip = nn.ModuleList(nn.Conv1d(g, s, 1) for _ in self.dilations)
        self.out1 = nn.Conv1d(s, s, 1)
        self.out2 = nn.Conv1d(s, self.head.channels, 1)

    def _build_linear_path(self, c: StageArchConfig) -> None:
        """Linear prediction path + hybrid distribution (categorical only; see models/predictor.py):
        two more output rows next to out2 (mu_nn, log_s), initialised to mu_nn = 0, s = 0.05
        (adaptive_scale: s = s_adapt * exp(log_s_nn), log_s_nn initialised to log(1 / (2 ln 2))),
        and with score taps a third row, the logit of their share in mu."""
        self.linear: LinearPath | None = None
        self.score: ScoreTaps | None = None
        self.lin_out: nn.Conv1d | None = None
        self.use_below = self.index > 0 and bool(c.use_tier_below)
        if self.head.linear_path and int(c.linear_order) > 0:
            back = ahead = None
            if self.use_below:
                back = int(c.linear_below)
                ahead = min(back, int(c.conditioning.lookahead))  # never beyond what the stage may see
            adaptive = bool(c.adaptive_scale)
            self.linear = LinearPath(self.classes, bool(c.end_class), int(c.linear_order), self.factor, back, ahead,
                                     adaptive=adaptive)
            self.linear.adapt_floor = float(c.adapt_floor)
            self.score = self._score_taps(c)
            if self.score is not None and adaptive:
                self.linear.note_floor = float(c.score.scale_floor)
            gate = RESIDUAL_GATE_INIT if self.use_below else SCORE_GATE_INIT
            init = [0.0, LOG_S_ADAPT_INIT if adaptive else LOG_S_INIT] + ([gate] if self.score else [])
            self.lin_out = nn.Conv1d(self.skip_channels, len(init), 1)
            with torch.no_grad():
                self.lin_out.weight.zero_()
                self.lin_out.bias.copy_(torch.tensor(init))
        if c.score.enabled and self.score is None:
            raise ValueError(f"stage {self.index}: score taps need the linear path (categorical, linear_order > 0)")

    def _score_taps(self, c: StageArchConfig) -> ScoreTaps | None:
        """Score-informed taps (models/score.py) when the config asks for them.

        Without a tier below (stage 0) they are blended with the own-past taps, so they have the
        linear order.  With one (``self.score_on_residual``) they predict the residual of the linear
        part from its past residuals: the harmonics the tier below cannot hold, and ``order`` may be
        larger than the linear order (finer lines)."""
        self.score_on_residual = False
        if not c.score.enabled:
            return None
        if not c.use_roll or self.rate is None:
            raise ValueError(f"stage {self.index}: score taps need use_roll and a rate")
        sc = c.score
        order = int(sc.order) or int(c.linear_order)
        if not self.use_below and order != int(c.linear_order):
            raise ValueError(f"stage {self.index}: score.order {order} must equal linear_order "
                             f"{c.linear_order} in a stage without a tier below (the taps are blended)")
        self.score_on_residual = self.use_below
        return ScoreTaps(order, self.rate, self.roll_fps, sc.bandwidth_hz, sc.floor, sc.rolloff, sc.lowest_hz,
                         sc.timbre_knots, self.n_genres, sc.timbre_per_genre, sc.crossfade_ms, sc.learned_bandwidth)

    def _build_genre(self, c: StageArchConfig) -> None:
        """Global conditioning: genre embedding, per-layer projection into every gate."""
        self.use_genre = bool(c.use_genre)
        if self.use_genre:
            r = self.residual_channels
            self.genre_embed = nn.Embedding(self.n_genres + 1, r)
            self.genre_proj = nn.Linear(r, self.n_layers * 2 * self.gate_channels, bias=False)

    def _build_conditioning(self, c: StageArchConfig) -> None:
        """Conditioning stack (tier below and/or roll), local conditioning inside every gate."""
        self.use_roll = bool(c.use_roll)
        self.conditioning: ConditioningStack | None = None
        if not any(S.wanted(c, self.index) for S in SOURCES.values()):
            return
        if self.rate is None:
            raise ValueError(f"stage {self.index}: rate is needed for the conditioning stack")
        up = self.factor if self.use_below else self.rate // self.roll_fps
        if up < 1 or (not self.use_below and self.rate % self.roll_fps):
            raise ValueError(f"stage {self.index}: rate {self.rate} is not a multiple of roll_fps {self.roll_fps}")
        cc = c.conditioning
        sources = {name: S(self.classes, cc.channels) for name, S in SOURCES.items() if S.wanted(c, self.index)}
        self.conditioning = ConditioningStack(cc.channels, cc.layers, cc.kernel_size, cc.lookahead, up,
                                              self.rate, self.roll_fps, sources)
        self.cond_proj = self._gate_projection(cc.channels)

    def _build_history(self, c: StageArchConfig) -> None:
        """History stack (a pooled summary of the distant past), projected into every gate."""
        self.history: HistoryStack | None = None
        if c.history.enabled:
            h = c.history
            self.history = HistoryStack(self.residual_channels, h.channels, h.layers, h.kernel_size, h.pool)
            self.history_proj = self._gate_projection(h.channels)

    def _gate_projection(self, channels: int) -> nn.Parameter:
        """A projection of ``channels`` features into every layer's gate (both halves)."""
        return nn.Parameter(torch.randn(self.n_layers * 2 * self.gate_channels, channels) / math.sqrt(channels))

    # ------------------------------------------------------------------ reported numbers
    @property
    def input_layer(self) -> nn.Module:
        """The head's input layer (``embed`` or ``input_proj``)."""
        return getattr(self, self.head.input_key)

    @property
    def n_layers(self) -> int:
        return len(self.dilations)

    @property
    def receptive_field(self) -> int:
        """Samples of own past that affect an output (main stack): x[t-R..t-1] -> out[t]."""
        return 1 + sum(d * (self.kernel_size - 1) for d in self.dilations)

    @property
    def history_receptive_field(self) -> int:
        """Samples of own past that affect an output through the history stack (0 if off)."""
        if self.history is None:
            return 0
        p = self.history.pool
        return (self.history.receptive_field + 1) * p - 1 + self.receptive_field - self.kernel_size

    @property
    def linear_receptive_field(self) -> int:
        """Samples of own past that affect an output through the linear path (0 if off); score taps on
        the residual read Q residuals further back."""
        if self.linear is None:
            return 0
        return self.linear.reach + (self.score.order if self.score is not None and self.score_on_residual else 0)

    @property
    def lookahead(self) -> int:
        """Stage samples after t covered by the conditioning input visible at t."""
        if self.conditioning is None:
            return 0
        return (self.conditioning.lookahead + 1) * self.conditioning.up - 1

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_sample(self, chunk: int = 4096) -> float:
        """2 * multiply-adds per generated sample in streaming, conditioning amortised."""
        r, g, s, k, n = self.residual_channels, self.gate_channels, self.skip_channels, self.kernel_size, self.n_layers
        macs = n * (k * r * 2 * g + g * s) + (n - 1) * g * r + s * s + s * self.head.channels
        if self.linear is not None:
            macs += s * self.lin_out.out_channels + self.linear.macs_per_sample()
        if self.score is not None:
            macs += 2 * self.score.order + 1
        macs += self.head.input_macs(r)
        if self.conditioning is not None:
            macs += self.conditioning.channels * n * 2 * g + self.conditioning.macs_per_sample(chunk)
        if self.history is not None:
            hc = self.history.channels
            macs += (self.history.macs_per_frame(r) + hc * n * 2 * g) / self.history.pool
        return 2.0 * macs

    # ------------------------------------------------------------------ pieces shared with streaming
    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, T) (int64 codes, or float PCM for a float head) -> (B, T, R)."""
        return self.head.embed(self.input_layer, x)

    def genre_ids(self, genre, batch: int, device) -> torch.Tensor:
        if genre is None:
            return torch.full((batch,), self.n_genres, dtype=torch.long, device=device)
        genre = torch.as_tensor(genre, dtype=torch.long, device=device)
        return genre.expand(batch) if genre.dim() == 0 else genre

    def timbre_ids(self, genre, batch: int, device) -> torch.Tensor:
        """Rows (B,) of the score taps' learned envelope: the genre's, or "no genre" for a stage that does not
        read the genre (it trains on that row alone)."""
        return self.genre_ids(genre if self.use_genre else None, batch, device)

    def gate_bias(self, genre, batch: int, device) -> torch.Tensor:
        """Per-layer constant inside every gate (conv bias + genre): (B, L * 2G)."""
        bias = torch.cat([conv.bias for conv in self.convs]).expand(batch, -1)
        if self.use_genre:
            bias = bias + self.genre_proj(self.genre_embed(self.genre_ids(genre, batch, device)))
        return bias

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """Input at t is x[t-1]; the head's start value at t = 0."""
        return torch.cat([self.head.start_like(x), x[:, :-1]], dim=1)

    @torch.no_grad()
    def noisy_past(self, x: torch.Tensor, cond: Conditioning | None, share: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, T) codes -> the same codes read through white noise of std ``share`` * sqrt(pi / 2) * the
        linear part's local mean |residual| (its adaptive-scale window before t; the crop's mean without an
        adaptive scale), re-encoded; END codes kept.  What a stage reads when its past is its own draws,
        which deviate from the prediction by about the residual: training on it (stage config
        ``train_input_noise``, LPCNet's noise injection) teaches the stage not to amplify such a past.  A stage
        without a linear path, or ``share`` 0: x unchanged."""
        if self.linear is None or share <= 0:
            return x
        cond = Conditioning.of(cond)
        lin = self.linear
        v = lin.decode(x)  # (B, T)
        mu = lin.predict(lin.decode(self.shift(x)), cond.below, lin.fallback_rows(cond.below, cond.drop_linear,
                                                                                  x.shape[0]))
        r_abs = (v - (mu + self.lin_out.bias[0])).abs()
        level = lin.adapt_scale(r_abs) if lin.adaptive else r_abs.mean(1, keepdim=True).expand_as(r_abs)
        noise = torch.randn(x.shape, generator=generator, dtype=v.dtype).to(v.device)
        noisy = mulaw_encode_torch(v + noise * level * (share * math.sqrt(math.pi / 2)), bits_of(lin.classes))
        if self.end_code is not None:
            noisy = torch.where(x == self.end_code, x, noisy)
        return noisy.to(x.dtype)

    # ------------------------------------------------------------------ teacher-forced pass
    @staticmethod
    def shift_values(v: torch.Tensor) -> torch.Tensor:
        """v (B, T) float -> (B, T) with [t] = v[t-1] (0 at t = 0)."""
        return F.pad(v, (1, 0))[:, :-1]

    @contextlib.contextmanager
    def record_adaptive_scale(self):
        """``with stage.record_adaptive_scale() as trace: stage(x, cond)``: each forward pass appends its
        s_adapt (B, T) (floor + window of the real |residuals|, before the note floor) to ``trace``."""
        self._scale_trace = []
        try:
            yield self._scale_trace
        finally:
            self._scale_trace = None

    def forward(self, x: torch.Tensor, cond: Conditioning | None = None, **fields: Any) -> torch.Tensor:
        """x (B, T) -> (B, C, T): output t is the distribution of x[t] given x[<t] and ``cond``.

        ``cond.drop_below`` (B,) bool drops the tier below from the network and (unless
        ``drop_below_linear`` says otherwise) from the linear path, which then uses its fallback
        taps.  ``cond.cond_len`` (B,) int: stage samples of ``below`` / ``roll`` that exist, counted
        from x's start (the rest is padding past the piece's end, read as missing).  Keyword
        ``fields`` (``genre=...``) set fields of ``cond``.
        """
        cond = Conditioning.of(cond, **fields)
        if cond.cond_len is not None and self.conditioning is not None:
            return self._forward_by_cond_len(x, cond)
        b, t = x.shape
        dev = x.device
        g2 = 2 * self.gate_channels
        e = self.embed_input(x)  # (B, T, R) embeddings of x[t] (history input)
        h = self.embed_input(self.shift(x)).transpose(1, 2)  # (B, R, T)
        bias = self.gate_bias(cond.genre, b, dev).unsqueeze(-1)  # (B, L*2G, 1)
        local = None
        if self.conditioning is not None:
            up = self.conditioning.up
            local = self.conditioning.features(b, cond, 0, -(-t // up))[:, :, :t]  # (B, Cc, T)
        hist = None
        if self.history is not None:
            hist = self.history(e, cond.drop_history)  # (B, H, M)
        skips = 0
        for i, d in enumerate(self.dilations):
            z = F.conv1d(causal_pad(h, d, self.kernel_size), self.convs[i].weight, dilation=d)
            z = z + bias[:, i * g2:(i + 1) * g2]  # (B, 2G, T)
            if local is not None:
                z = z + F.conv1d(local, self.cond_proj[i * g2:(i + 1) * g2, :, None])
            if hist is not None:
                hp = F.conv1d(hist, self.history_proj[i * g2:(i + 1) * g2, :, None])  # (B, 2G, M)
                z = z + hp.repeat_interleave(self.history.pool, dim=2)[:, :, :t]
            a = gated(z)  # (B, G, T)
            skips = skips + self.skip[i](a)
            if i + 1 < self.n_layers:
                h = h + self.res[i](a)
        y = F.relu(self.out1(F.relu(skips)))  # (B, S, T)
        out = self.out2(y)  # (B, C, T)
        if self.linear is None:
            return out
        fallback = self.linear.fallback_rows(cond.below, cond.drop_linear, b)
        u = self.linear.decode(self.shift(x))  # (B, T): u[t] = dec(x[t-1])
        mu = self.linear.predict(u, cond.below, fallback)  # (B, T)
        extra = self.lin_out(y)  # (B, 2 or 3, T): mu_nn, log_s [, score share logit]
        if self.score is not None:
            # taps (B, T, Q), on (B, T); w = the learned share where notes sound
            taps, on = self.score.sample_taps(cond.roll, cond.drop_roll, 0, t, b, u.dtype, u.device,
                                              self.timbre_ids(cond.genre, b, u.device))
            w = torch.sigmoid(extra[:, 2]) * on
            if self.score_on_residual:  # mu += w * sum_j c_j e[t-j], e = dec(x) - mu_lin - bias
                e = self.linear.decode(x) - (mu + self.lin_out.bias[0]).detach()  # (B, T)
                mu = mu + w * ScoreTaps.apply(self.shift_values(e), taps)
            else:  # mu = (1 - w) own-past taps + w score taps
                mu = mu + w * (ScoreTaps.apply(u, taps) - mu)
        log_s = extra[:, 1]
        if self.linear.adaptive:  # residuals of the linear part (taps + mu bias) for all t, then the window
            r_abs = (self.linear.decode(x) - (mu + self.lin_out.bias[0])).abs()
            s_adapt = self.linear.adapt_scale(r_abs)
            if self._scale_trace is not None:  # ``record_adaptive_scale``
                self._scale_trace.append(s_adapt.detach())
            if self.score is not None and self.linear.note_floor:  # where notes sound: the score's floor
                s_adapt = s_adapt + self.linear.note_floor * on
            log_s = self.linear.adapt_log_s(s_adapt, log_s)
        return self.linear.combine(out.transpose(1, 2), extra[:, 0], log_s, mu).transpose(1, 2)

    def _forward_by_cond_len(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``forward`` with per-row lengths of below / roll: rows grouped by length, each group run
        with below / roll cut to its length, outputs put back in row order."""
        cond_len = torch.as_tensor(cond.cond_len).reshape(-1).expand(x.shape[0])
        cond = cond.replace(cond_len=None)
        outs, order = [], []
        for n in cond_len.unique().tolist():
            rows = (cond_len == n).nonzero()[:, 0].to(x.device)
            part = cond.rows(rows).window(0, n, self.factor, self.rate, self.roll_fps)
            outs.append(self(x[rows], part))
            order.append(rows)
        return torch.cat(outs)[torch.argsort(torch.cat(order))]

    # ------------------------------------------------------------------ linear prediction path
    def set_linear_predictor(self, past: torch.Tensor, below: torch.Tensor | None = None, bias: float = 0.0,
                             scale: float | None = None, fallback: torch.Tensor | None = None) -> None:
        """Load linear-prediction taps: past (P,) = a_1..a_P, below (f, window) per-phase taps of
        below[t//f - back .. t//f + ahead] (None -> zeros), fallback (P,) own-past taps for rows
        without the tier below (None -> a copy of past), bias -> the mu_nn output bias
        (``lin_out.bias[0]``); scale (optional) -> the log_s output bias (``lin_out.bias[1]`` = log s;
        with an adaptive scale, the multiplier of s_adapt)."""
        if self.linear is None:
            raise ValueError(f"stage {self.index}: no linear path (linear_order = 0 or not categorical)")
        lin = self.linear
        past = torch.as_tensor(past).reshape(-1)
        fallback = past if fallback is None else torch.as_tensor(fallback).reshape(-1)
        if past.numel() != lin.order or fallback.numel() != lin.order:
            raise ValueError(f"set_linear_predictor: past / fallback have {past.numel()} / {fallback.numel()} "
                             f"taps, the stage has {lin.order}")
        with torch.no_grad():
            lin.past_weight.copy_(past.to(lin.past_weight))
            if lin.fallback_weight is not None:
                lin.fallback_weight.copy_(fallback.to(lin.fallback_weight))
            if lin.below_weight is not None:
                if below is None:
                    lin.below_weight.zero_()
                else:
                    below = torch.as_tensor(below)
                    if tuple(below.shape) != tuple(lin.below_weight.shape):
                        raise ValueError(f"set_linear_predictor: below has shape {tuple(below.shape)}, "
                                         f"expected {tuple(lin.below_weight.shape)}")
                    lin.below_weight.copy_(below.to(lin.below_weight))
            elif below is not None:
                raise ValueError(f"stage {self.index}: no below taps (stage 0 or use_tier_below off)")
            self.lin_out.bias[0] = float(bias)
            if scale is not None:
                self.lin_out.bias[1] = math.log(max(float(scale), 1e-4))

    # ------------------------------------------------------------------ streaming
    def streaming(self, batch: int = 1, cond: Conditioning | None = None, chunk: int = 4096, **fields: Any):
        """Context manager for sample-by-sample generation (see models/streaming.py); ``cond`` covers
        the whole piece (keyword ``fields`` set fields of it, as in ``forward``)."""

        return StageStream(self, batch=batch, cond=Conditioning.of(cond, **fields), chunk=chunk)

    @torch.no_grad()
    def stream_layout(self) -> dict[str, Any]:
        """This stage's parameters laid out for the streaming step (models/streaming.py), detached:
        per layer (dilation, taps (R, 2G) for lags 0, d, .., d(k-1), residual [W; bias] (G+1, R) or
        None after the last); all skips [W; bias] stacked (L*(G+1), S); out1; out2 with the linear
        path's rows appended (one matmul: [logits | mu_nn | log_s [| score share logit]]); the
        conditioning and history projections (L*2G wide)."""
        k, n = self.kernel_size, self.n_layers
        layers = []
        for i, d in enumerate(self.dilations):
            w = self.convs[i].weight.detach()  # (2G, R, k); tap k-1 is lag 0
            taps = [w[:, :, k - 1 - j].t().contiguous() for j in range(k)]  # (R, 2G) for lag d*j
            wr = None
            if i + 1 < n:
                res = self.res[i]
                wr = torch.cat([res.weight.detach()[:, :, 0].t(), res.bias.detach()[None]], 0).contiguous()
            layers.append((d, taps, wr))
        lay: dict[str, Any] = {
            "layers": layers,
            "w_skip": torch.cat([torch.cat([sk.weight.detach()[:, :, 0].t(), sk.bias.detach()[None]], 0)
                                 for sk in self.skip], 0).contiguous(),
            "w_out1": self.out1.weight.detach()[:, :, 0].t().contiguous(), "b_out1": self.out1.bias.detach(),
            "w_out2": self.out2.weight.detach()[:, :, 0].t().contiguous(), "b_out2": self.out2.bias.detach(),
        }
        if self.linear is not None:
            lay["lin_bias"] = float(self.lin_out.bias.detach()[0])
            lay["w_out2"] = torch.cat([lay["w_out2"], self.lin_out.weight.detach()[:, :, 0].t()], 1).contiguous()
            lay["b_out2"] = torch.cat([lay["b_out2"], self.lin_out.bias.detach()])
        if self.conditioning is not None:
            lay["w_cond"] = self.cond_proj.detach().t().contiguous()  # (Cc, L*2G)
        if self.history is not None:
            lay["w_hist"] = self.history_proj.detach()  # (L*2G, H)
        return lay

    def step(self, x_prev: torch.Tensor) -> torch.Tensor:
        """Step the active stream (``with stage.streaming(...)``): x_prev (B,) -> (B, C)."""
        stream = getattr(self, "_stream", None)
        if stream is None:
            raise RuntimeError("Stage.step needs an active stream: use `with stage.streaming(batch=B) as s:`")
        return stream.step(x_prev)


def build_stage(cfg: Any, index: int, n_genres: int, stage_cfg: Any = None) -> Stage:
    """The one builder from a run config to stage ``index``: ``cfg.stages[index]`` (or ``stage_cfg``)
    with the factor, roll rate and classes of ``cfg.data`` (``rates``, ``roll_fps``, ``classes`` or
    ``mu_bits``).  ``load_stage`` rebuilds from model.json's same fields."""
    rates = list(cfg.data.rates)
    classes = getattr(cfg.data, "classes", 2 ** getattr(cfg.data, "mu_bits", 8))
    return Stage(cfg.stages[index] if stage_cfg is None else stage_cfg, index=index, n_genres=n_genres,
                 factor=1 if index == 0 else rates[index] // rates[index - 1], roll_fps=cfg.data.roll_fps,
                 classes=classes)
