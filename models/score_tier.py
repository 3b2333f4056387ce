"""The score tier: a small decoder-only Transformer over note events, conditioned on genre.

nanoGPT's shape (pre-LayerNorm blocks, learned positions, tied input/output embedding), with a
learned genre embedding added at every position.  Genre id ``n_genres`` means "no genre": the
trainer swaps a piece's genre for it with some probability (conditioning dropout), and
unconditional pieces sample with it.

Sequences: a piece is fed as ``[end_token] + events`` (the END of "the piece before" is the start
symbol, as GPT-2 uses ``<|endoftext|>``), so its first event is predicted too, and generation
with no prompt starts from ``[end_token]``.  Windows cut from inside a piece start anywhere;
positions count from the window's start, so a sliding window at generation time is what
training saw.  ``pad_token`` fills short windows and is masked out of the loss; it is never sampled.

The clock: with ``clock_buckets > 0`` every position also gets an embedding of the music's elapsed
time since the piece began (after that position's event, in buckets of ``clock_steps`` time steps; the
last bucket holds everything later), so the model can learn where pieces end: a window cut from
inside a piece passes the steps before it (``offset``).  Time is counted from the vocabulary's time
shifts, which the config locates (``shift_first``, ``n_shifts``: token ``shift_first + k`` advances
``k + 1`` steps).  Models without a clock (``clock_buckets`` 0, format 1) load and run unchanged.

This module knows nothing else of the vocabulary's meaning (``pipeline/corpus/score_events.py`` owns it):
the config carries its size, the END/PAD ids and where the time shifts are, and ``generate`` takes
``seconds_of`` (a token -> seconds function) for its length cap in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "strata-score-tier"
FORMAT_VERSION = 2  # 2: the clock (config keys clock_buckets, clock_steps, shift_first, n_shifts)
LN2 = math.log(2.0)



class KVCache:
    """Keys and values of one layer for the positions seen so far, in buffers of ``context`` positions
    (one write per step, no concatenation): ``k``, ``v`` (B, H, context, D), ``n`` positions filled."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.n = 0

    def extend(self, k: torch.Tensor, v: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H, T, D); return the keys and values of all n + T positions."""
        if self.k is None:
            b, h, _, d = k.shape
            self.k, self.v = k.new_zeros(b, h, context, d), v.new_zeros(b, h, context, d)
        t = k.shape[2]
        self.k[:, :, self.n:self.n + t] = k
        self.v[:, :, self.n:self.n + t] = v
        self.n += t
        return self.k[:, :, :self.n], self.v[:, :, :self.n]


@dataclass(frozen=True)
class ScoreTierConfig:
    """The score tier's architecture (nanoGPT-sized knobs)."""

    vocab_size: int
    n_genres: int  # genre ids 0..n_genres - 1; id n_genres is "no genre"
    end_token: int
    pad_token: int
    n_layers: int = 4
    n_heads: int = 4
    width: int = 128
    context: int = 512  # events the model sees at once
    dropout: float = 0.1
    clock_buckets: int = 0  # elapsed-time buckets (0: no clock)
    clock_steps: int = 200  # time steps per bucket (2 s at 10 ms steps)
    shift_first: int = 0  # the first time-shift token (advances 1 step)
    n_shifts: int = 0  # time-shift tokens: shift_first + k advances k + 1 steps

    def __post_init__(self) -> None:
        checks = [(self.vocab_size > 1, "vocab_size must be > 1"), (self.n_genres >= 0, "n_genres must be >= 0"),
                  (0 <= self.end_token < self.vocab_size, "end_token must be a token id"),
                  (0 <= self.pad_token < self.vocab_size, "pad_token must be a token id"),
                  (self.end_token != self.pad_token, "end_token and pad_token must differ"),
                  (self.n_layers >= 1 and self.n_heads >= 1, "n_layers and n_heads must be >= 1"),
                  (self.width % self.n_heads == 0, f"width {self.width} must be a multiple of n_heads {self.n_heads}"),
                  (self.context >= 2, "context must be >= 2 events"), (0.0 <= self.dropout < 1.0, "dropout in [0, 1)"),
                  (self.clock_buckets >= 0 and self.clock_steps >= 1, "clock_buckets >= 0 and clock_steps >= 1"),
                  (self.clock_buckets == 0 or self.n_shifts >= 1, "a clock needs the time shifts (n_shifts >= 1)"),
                  (0 <= self.shift_first and self.shift_first + self.n_shifts <= self.vocab_size,
                   "the time shifts must be token ids")]
        for ok, why in checks:
            if not ok:
                raise ValueError(f"score tier config: {why}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ScoreTierConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.context = cfg.context
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, W) after the T' positions held in ``cache`` (which it extends) -> (B, T, W)."""
        b, t, w = x.shape
        q, k, v = self.qkv(x).split(w, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, w // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.extend(k, v, self.context)  # (B, H, T' + T, D)
        past = k.shape[2] - t
        if past == 0:
            mask, causal = None, t > 1
        else:  # query i (at position past + i) sees keys 0..past + i
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past) if t > 1 else None
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(b, t, w)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: ScoreTierConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


def nll_bits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bits of each target event: logits (B, T, V), targets (B, T), mask (B, T) bool -> (B, T), 0 where masked."""
    nats = F.cross_entropy(logits.transpose(1, 2).float(), targets.clamp(0, logits.shape[-1] - 1), reduction="none")
    return torch.where(mask, nats / LN2, torch.zeros_like(nats))


class ScoreTransformer(nn.Module):
    """Events (B, T) and genre (B,) -> next-event logits (B, T, V)."""

    nll_bits = staticmethod(nll_bits)

    def __init__(self, cfg: ScoreTierConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = nn.Embedding(cfg.context, cfg.width)
        self.genre = nn.Embedding(cfg.n_genres + 1, cfg.width)
        self.clock = nn.Embedding(cfg.clock_buckets, cfg.width) if cfg.clock_buckets else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied (nanoGPT)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):  # residual outputs (GPT-2)
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def start_token(self) -> int:
        """The symbol before a piece's first event (its END)."""
        return self.cfg.end_token

    @property
    def unconditional(self) -> int:
        """The "no genre" id."""
        return self.cfg.n_genres

    def token_steps(self, tokens: torch.Tensor) -> torch.Tensor:
        """Time steps each token advances: tokens (...) long -> (...) long (0 for all but time shifts)."""
        k = tokens - self.cfg.shift_first
        return torch.where((k >= 0) & (k < self.cfg.n_shifts), k + 1, torch.zeros_like(k))

    def clock_ids(self, tokens: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """Elapsed-time bucket after each token: tokens (B, T), offset (B,) steps before the first -> (B, T)."""
        steps = self.token_steps(tokens).cumsum(1)
        if offset is not None:
            steps = steps + offset.to(steps)[:, None]
        return (steps // self.cfg.clock_steps).clamp(max=self.cfg.clock_buckets - 1)

    def _run(self, tokens: torch.Tensor, genre: torch.Tensor, start: int = 0,
             caches: list[KVCache] | None = None, offset: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) at positions start..start + T - 1 of the window, after ``offset`` (B,) time steps of
        the piece -> logits (B, T, V); ``caches`` (one per layer, holding positions 0..start - 1) are extended."""
        t = tokens.shape[1]
        if start + t > self.cfg.context:
            raise ValueError(f"score tier: {start + t} events exceed the context of {self.cfg.context}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)[None] + self.genre(genre)[:, None]  # (B, T, W)
        if self.clock is not None:
            x = x + self.clock(self.clock_ids(tokens, offset))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln_f(x))  # (B, T, V)

    def forward(self, tokens: torch.Tensor, genre: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) long, genre (B,) long, offset (B,) long time steps of the piece before the window (None:
        windows that start the piece) -> logits (B, T, V) of each next event."""
        if tokens.dim() != 2 or genre.shape != tokens.shape[:1]:
            raise ValueError(f"score tier: tokens (B, T) and genre (B,), got {tuple(tokens.shape)} and "
                             f"{tuple(genre.shape)}")
        return self._run(tokens, genre, offset=offset)

    # ------------------------------------------------------------------------- sampling

    @torch.inference_mode()
    def generate(self, genre: int, max_events: int, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
                 prompt: list[int] | None = None, max_seconds: float | None = None,
                 seconds_of: Callable[[int], float] | None = None, min_seconds: float = 0.0) -> list[int]:
        """Sample a score: ``prompt`` (a trailing END dropped) followed by new events, ending with END.

        One step per event through a key/value cache.  Stops at the model's own END (kept), or after
        ``max_events`` new events or before the event that would pass ``max_seconds`` of new music
        (``seconds_of(token)``: seconds a token advances), then appends END.  Past ``context`` events
        the window slides: the last ``context // 2`` are prefilled again.  ``temperature`` 0 is greedy.
        END is not drawn before ``min_seconds`` of new music (``seconds_of`` needed).
        """
        cfg = self.cfg
        if not 0 <= genre <= cfg.n_genres:
            raise ValueError(f"score tier: genre id {genre} is not in 0..{cfg.n_genres} ({cfg.n_genres} = no genre)")
        if (max_seconds is not None or min_seconds > 0) and seconds_of is None:
            raise ValueError("score tier: max_seconds and min_seconds need seconds_of (token -> seconds)")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"score tier: temperature >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
        prompt = [int(t) for t in (prompt or [])]
        if prompt and prompt[-1] == cfg.end_token:
            prompt = prompt[:-1]
        bad = [t for t in prompt if not 0 <= t < cfg.vocab_size or t in (cfg.pad_token, cfg.end_token)]
        if bad:
            raise ValueError(f"score tier: the prompt holds {bad[0]}, not an event (END only at its end, no PAD)")
        was_training = self.training
        self.eval()
        try:
            return self._sample(genre, max_events, temperature, top_p, seed, prompt, max_seconds, seconds_of,
                                min_seconds)
        finally:
            self.train(was_training)

    def _sample(self, genre, max_events, temperature, top_p, seed, prompt, max_seconds, seconds_of,
                min_seconds=0.0) -> list[int]:
        cfg = self.cfg
        device = self.tok.weight.device
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        g = torch.tensor([genre], device=device)
        seq = [cfg.end_token] + prompt
        steps = [0]  # steps[i]: time steps of seq[1..i] (the clock after seq[i])
        for tok in prompt:
            steps.append(steps[-1] + self._steps_of(tok))
        w0 = 0 if len(seq) <= cfg.context else len(seq) - cfg.context // 2  # window start in seq

        def prefill() -> tuple[torch.Tensor, list[KVCache]]:
            caches = [KVCache() for _ in self.blocks]
            before = torch.tensor([steps[w0 - 1] if w0 > 0 else 0], device=device)
            return self._run(torch.tensor([seq[w0:]], device=device), g, 0, caches, before)[0, -1], caches

        logits, caches = prefill()
        seconds, new = 0.0, 0
        while True:
            if new >= max_events:
                break
            tok = self._draw(logits, temperature, top_p, gen, allow_end=seconds >= min_seconds)
            if max_seconds is not None and seconds + seconds_of(tok) > max_seconds + 1e-9:
                break
            seq.append(tok)
            steps.append(steps[-1] + self._steps_of(tok))
            new += 1
            if tok == cfg.end_token:
                return seq[1:]
            if seconds_of is not None:
                seconds += seconds_of(tok)
            if len(seq) - w0 > cfg.context:  # the window is full: slide
                w0 = len(seq) - cfg.context // 2
                logits, caches = prefill()
            else:
                logits = self._step(tok, len(seq) - 1 - w0, steps[-1], int(genre), caches)
        return seq[1:] + [cfg.end_token]

    def _step(self, tok: int, pos: int, clock_steps: int, genre: int, caches: list[KVCache]) -> torch.Tensor:
        """Logits (V,) after one event at window position ``pos`` (``clock_steps`` of the piece after it), the
        caches extended: ``_run`` for one event, in functional calls (a step of sampling is ~20 tiny ops: the
        modules' call overhead was a fifth of it).  Equal to ``_run`` within float tolerance (tested)."""
        cfg, w = self.cfg, self.cfg.width
        x = self.tok.weight[tok] + self.pos.weight[pos] + self.genre.weight[genre]  # (W,)
        if self.clock is not None:
            x = x + self.clock.weight[min(clock_steps // cfg.clock_steps, cfg.clock_buckets - 1)]
        x = x.view(1, 1, w)
        d = w // cfg.n_heads
        for block, cache in zip(self.blocks, caches):
            a = block.attn
            h = F.layer_norm(x, (w,), block.ln1.weight, block.ln1.bias, block.ln1.eps)
            q, k, v = (z.view(1, 1, cfg.n_heads, d).transpose(1, 2) for z in F.linear(h, a.qkv.weight, a.qkv.bias)
                       .split(w, dim=2))  # (1, H, 1, D)
            k, v = cache.extend(k, v, cfg.context)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 1, w)
            x = x + F.linear(y, a.proj.weight, a.proj.bias)
            h = F.layer_norm(x, (w,), block.ln2.weight, block.ln2.bias, block.ln2.eps)
            up, down = block.mlp[0], block.mlp[2]
            x = x + F.linear(F.gelu(F.linear(h, up.weight, up.bias)), down.weight, down.bias)
        x = F.layer_norm(x, (w,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return F.linear(x, self.head.weight)[0, -1]  # (V,)

    def _steps_of(self, tok: int) -> int:
        k = tok - self.cfg.shift_first
        return k + 1 if 0 <= k < self.cfg.n_shifts else 0

    def _draw(self, logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator,
              allow_end: bool = True) -> int:
        """One event from logits (V,): never PAD; greedy at temperature 0; else nucleus (top-p) sampling that
        always keeps END: the END of a piece is one event among a thousand, rarely inside the nucleus of a
        cadence's many possible next notes, and a nucleus that cut it would never let a piece end (measured:
        0 of 20 scores ended at top-p 0.95)."""
        logits = logits.float().clone()
        logits[self.cfg.pad_token] = -math.inf
        if not allow_end:
            logits[self.cfg.end_token] = -math.inf
        if temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            p, idx = probs.sort(descending=True)
            keep = (p.cumsum(0) - p) < top_p  # the smallest head whose mass reaches top_p (the first always)
            keep |= idx == self.cfg.end_token  # ... and END
            probs = torch.zeros_like(probs).scatter_(0, idx[keep], p[keep])
        return int(torch.multinomial(probs, 1, generator=gen))

    @torch.no_grad()
    def events_bits(self, events: Sequence[int], genre: int, batch: int = 16) -> tuple[float, int]:
        """(total bits, events) of one piece read as ``[end_token] + events``: every event scored once, in
        windows of ``context`` that advance by ``context // 2`` (each event after the first window sees at
        least ``context // 2`` events before it), as a held-out measure in bits per event."""
        cfg = self.cfg
        seq = [cfg.end_token] + [int(t) for t in events]
        n, half = len(seq) - 1, cfg.context // 2
        steps = self.token_steps(torch.tensor(seq)).cumsum(0).tolist()  # after seq[i]
        starts = [0]  # window at s scores targets [s + context - half, s + context): right after the one before
        while starts[-1] + cfg.context < n:
            starts.append(starts[-1] + half)
        was_training = self.training
        self.eval()
        total = 0.0
        try:
            for i in range(0, len(starts), batch):
                chunk = starts[i:i + batch]
                x, y, mask = window_batch([events] * len(chunk), chunk, cfg.context, cfg.end_token, cfg.pad_token)
                for j, s in enumerate(chunk):
                    if s > 0:
                        mask[j, :cfg.context - half] = False  # scored by the window before
                device = self.tok.weight.device
                offset = torch.tensor([steps[s - 1] if s > 0 else 0 for s in chunk], device=device)
                bits = nll_bits(self(x.to(device), torch.full((len(chunk),), genre, device=device), offset),
                                y.to(device), mask.to(device))
                total += float(bits.sum())
        finally:
            self.train(was_training)
        return total, n

    # ------------------------------------------------------------------------- description

    def describe(self) -> dict:
        """JSON-ready: what ``from_description`` rebuilds the model from (weights aside)."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "config": dataclasses.asdict(self.cfg),
                "n_params": self.n_params}

    @classmethod
    def from_description(cls, d: dict) -> "ScoreTransformer":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a score tier description (format {d.get('format') if isinstance(d, dict) else d!r})")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"score tier description version {d['version']} is newer than {FORMAT_VERSION}")
        names = {f.name for f in dataclasses.fields(ScoreTierConfig)}
        conf = d.get("config") or {}
        unknown = sorted(set(conf) - names)
        if unknown:
            raise ValueError(f"score tier description: unknown config keys {unknown}")
        return cls(ScoreTierConfig(**conf))


def window_batch(pieces: Sequence[Sequence[int]], starts: Sequence[int], context: int, end_token: int,
                 pad_token: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training windows: piece i as ``[end_token] + events``, cut at ``starts[i]`` to ``context + 1``
    symbols -> inputs (B, context), targets (B, context), mask (B, context) bool (False on padding)."""
    b = len(pieces)
    tokens = torch.full((b, context + 1), pad_token, dtype=torch.long)
    for i, (events, s) in enumerate(zip(pieces, starts)):
        seq = [end_token] + list(events)
        part = seq[s:s + context + 1]
        tokens[i, :len(part)] = torch.tensor(part, dtype=torch.long)
    targets = tokens[:, 1:]
    return tokens[:, :-1], targets, targets != pad_token
