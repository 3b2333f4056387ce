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
With ``clock_anchors > 0`` the clock is smooth instead (format 4): ``clock_anchors`` embeddings at times
log-spaced ``CLOCK_PER_OCTAVE`` per doubling of ``1 + t / clock_steps``, and a time between two anchors gets
their linear interpolation (the last anchor holds all later time).  Independent 2 s buckets learn "where a
piece ends" separately in each bucket from the few ENDs that fall in it; interpolated anchors share it between
neighbouring times, so the chance of END can grow smoothly with the time played.

The asked length (``length_buckets > 0``, Jukebox's timing input): every position also gets an
embedding of the time left until the length the piece was asked to have (after that position's event;
id 0: no length asked, as the trainer's length dropout teaches; the buckets are log-spaced, finest
near the end, ``remain_id``).  A piece's END is then the model's reading of "time is up", learned from
real endings: it still has to find a cadence, and nothing forces it (the measure is how close it ends).

The length head (``length_head``): a second head (a small MLP) reads each position's last hidden state and its input
embedding, both detached (it learns from the events' model and does not change it: a linear head sharing the trunk
cost 0.08 bits per event at 3000 steps; the input hands it the genre and the clock, which the states alone did not
keep at a piece's opening), as a distribution over the time left until the piece's END (the asked length's buckets,
``remain_id``), trained on the windows not told their length, so it never sees the answer. Asked no length, the
tier first chooses one from it at the start of the piece (or after a prompt: ``choose_length``), then writes to it.
A model of where a piece ends that reads only a window of events and the clock gives the END of a real piece at most
5% where it ends and lets most real pieces play on past it (``bench/score_tier.py``, ``end_hazard``); the head learns
the length from every position of every whole piece instead of from its one END.

Held notes (``held_input``): every position also gets the set of pitches sounding after its event
(a 128-dim multi-hot, projected), so a note struck more than a window ago is not forgotten: without
it, sampled scores left notes on: mean polyphony 5.8-8.9 against 2.7-3.9 in the held-out scores of the
three polyphonic demo genres (``docs/results/score_tier_clock_ends.json``).  A window cut from inside a piece passes the
pitches sounding before it (``held``).  The config locates the NOTE_ON/NOTE_OFF tokens.

The key input (``transpositions``): the trainer transposes each window by a random -t..+t semitones
(augmentation), and every position also gets an embedding of that transposition (the augmentation's
conditioning, as non-leaking augmentations are conditioned in image models).  Sampling and scoring read the
"as written" id: the tier learns intervals from every transposition and still writes in its genre's keys.
Without it, a tier trained with transposition writes in any of the 2t + 1 keys alike (the demo corpus's
renaissance scores have 7% of their notes on the black keys; such a tier's, on the demo and on its other-soundfont
rendering, 32% and 39%: a probe described in the closing note of issue 19).

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

from models.sampling import guide

FORMAT = "strata-score-tier"
FORMAT_VERSION = 5  # 2: the clock (clock_buckets, clock_steps, shift_first, n_shifts); 3: length_buckets, held_input;
# 4: clock_anchors (the smooth clock), length_head; 5: transpositions (the key input)
REMAIN_PER_OCTAVE = 8  # remaining-time buckets per doubling of the time left
CLOCK_PER_OCTAVE = 4  # the smooth clock's anchors per doubling of 1 + elapsed / clock_steps
NO_LENGTH = -1  # ``total`` of a piece whose length is not given
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
    clock_steps: int = 200  # time steps per bucket (2 s at 10 ms steps); the smooth clock's time unit
    clock_anchors: int = 0  # the smooth clock: anchors log-spaced in elapsed time, interpolated (0: none)
    shift_first: int = 0  # the first time-shift token (advances 1 step)
    n_shifts: int = 0  # time-shift tokens: shift_first + k advances k + 1 steps
    length_buckets: int = 0  # time left to the asked length, log-spaced buckets (0: no length input); id 0: none
    length_head: bool = False  # a head for the time left to END (length_buckets' buckets): the tier chooses lengths
    held_input: bool = False  # the pitches sounding after each event as an input
    note_on_first: int = 0  # NOTE_ON of pitch p is note_on_first + p
    note_off_first: int = 0  # NOTE_OFF of pitch p is note_off_first + p
    n_pitches: int = 0
    # the key input: the transposition the training augmentation applied to a window, ids 0..transpositions - 1 for
    # -(transpositions // 2)..+(transpositions // 2) semitones; sampling and scoring read the middle id ("as
    # written"), so the tier learns from every transposition and still writes in its genre's keys (0: no input)
    transpositions: int = 0

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
                  (self.clock_anchors == 0 or (self.clock_anchors >= 2 and self.clock_buckets == 0
                                               and self.n_shifts >= 1),
                   "clock_anchors is 0 or >= 2, replaces clock_buckets (0) and needs the time shifts"),
                  (0 <= self.shift_first and self.shift_first + self.n_shifts <= self.vocab_size,
                   "the time shifts must be token ids"),
                  (self.length_buckets == 0 or (self.length_buckets >= 2 and self.n_shifts >= 1),
                   "length_buckets is 0 or >= 2, and needs the time shifts"),
                  (not self.length_head or self.length_buckets >= 2, "length_head needs length_buckets >= 2"),
                  (not self.held_input or (self.n_pitches >= 1 and self.note_on_first >= 0 and self.note_off_first >= 0
                                           and max(self.note_on_first, self.note_off_first) + self.n_pitches
                                           <= self.vocab_size), "held_input needs the note tokens (n_pitches >= 1)"),
                  (self.transpositions == 0 or (self.transpositions >= 3 and self.transpositions % 2 == 1),
                   "transpositions is 0 or odd and >= 3 (-t..+t semitones)")]
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
        self.anchors = nn.Embedding(cfg.clock_anchors, cfg.width) if cfg.clock_anchors else None
        self.remain = nn.Embedding(cfg.length_buckets, cfg.width) if cfg.length_buckets else None
        self.held = nn.Linear(cfg.n_pitches, cfg.width, bias=False) if cfg.held_input else None
        self.key = nn.Embedding(cfg.transpositions, cfg.width) if cfg.transpositions else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied (nanoGPT)
        self.left = (nn.Sequential(nn.Linear(2 * cfg.width, cfg.width), nn.GELU(),
                                   nn.Linear(cfg.width, cfg.length_buckets))
                     if cfg.length_head else None)  # reads states and inputs detached (``_left``)
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
    def as_written(self) -> int:
        """The key input's id of an untransposed window (what sampling and scoring read)."""
        return self.cfg.transpositions // 2

    @property
    def unconditional(self) -> int:
        """The "no genre" id."""
        return self.cfg.n_genres

    def token_steps(self, tokens: torch.Tensor) -> torch.Tensor:
        """Time steps each token advances: tokens (...) long -> (...) long (0 for all but time shifts)."""
        k = tokens - self.cfg.shift_first
        return torch.where((k >= 0) & (k < self.cfg.n_shifts), k + 1, torch.zeros_like(k))

    def elapsed(self, tokens: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """Time steps of the piece after each token: tokens (B, T), offset (B,) steps before the first -> (B, T)."""
        steps = self.token_steps(tokens).cumsum(1)
        return steps if offset is None else steps + offset.to(steps)[:, None]

    def clock_ids(self, tokens: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """Elapsed-time bucket after each token: tokens (B, T), offset (B,) steps before the first -> (B, T)."""
        return (self.elapsed(tokens, offset) // self.cfg.clock_steps).clamp(max=self.cfg.clock_buckets - 1)

    def clock_weights(self, elapsed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The smooth clock's interpolation: elapsed (...) time steps -> (lower anchor (...) long, weight of the
        upper one (...) float in [0, 1]); anchor k sits at ``z = CLOCK_PER_OCTAVE * log2(1 + t / clock_steps) = k``."""
        z = CLOCK_PER_OCTAVE * torch.log2(1.0 + elapsed.clamp(min=0).float() / self.cfg.clock_steps)
        z = z.clamp(max=self.cfg.clock_anchors - 1)
        lo = torch.floor(z).long().clamp(max=self.cfg.clock_anchors - 2)
        return lo, z - lo

    def anchor_clock(self, elapsed: torch.Tensor) -> torch.Tensor:
        """The smooth clock's embedding: elapsed (...) time steps -> (..., W)."""
        lo, f = self.clock_weights(elapsed)
        e = self.anchors.weight
        return e[lo] * (1.0 - f)[..., None] + e[lo + 1] * f[..., None]

    def remain_id(self, left: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Bucket of the time left: left (...) steps to the asked length, total (...) the asked length (``NO_LENGTH``:
        none) -> (...) long: 0 with no length asked, else 1 + floor(REMAIN_PER_OCTAVE * log2(1 + left / u))
        (u = clock_steps // 4 steps; 0 left and past the end share bucket 1), the last bucket holding all more."""
        u = max(1, self.cfg.clock_steps // 4)
        ids = 1 + torch.floor(REMAIN_PER_OCTAVE * torch.log2(1.0 + left.clamp(min=0).float() / u)).long()
        return torch.where(total < 0, torch.zeros_like(ids), ids.clamp(max=self.cfg.length_buckets - 1))

    def held_after(self, tokens: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
        """Pitches sounding after each token: tokens (B, T), held (B, P) bool sounding before the first (None:
        none) -> (B, T, P) bool.  A pitch sounds from its NOTE_ON to its NOTE_OFF; END releases every pitch."""
        cfg = self.cfg
        b, t = tokens.shape
        when = torch.arange(1, t + 1, device=tokens.device, dtype=torch.float32)[None, :, None]  # (1, T, 1)

        def last(first: int) -> torch.Tensor:  # (B, T, P): 1 + the latest index <= t of that pitch's token, or 0
            k = tokens - first
            hit = F.one_hot(k.clamp(0, cfg.n_pitches - 1), cfg.n_pitches) * ((k >= 0) & (k < cfg.n_pitches))[..., None]
            return (hit * when).cummax(1).values

        on, off = last(cfg.note_on_first), last(cfg.note_off_first)
        ended = ((tokens == cfg.end_token)[..., None] * when).cummax(1).values  # (B, T, 1)
        off = torch.maximum(off, ended)
        if held is not None:  # sounding before the window: as if struck at index 0.5
            on = torch.maximum(on, 0.5 * held.to(on)[:, None, :])
        return on > off

    def _run(self, tokens: torch.Tensor, genre: torch.Tensor, start: int = 0,
             caches: list[KVCache] | None = None, offset: torch.Tensor | None = None,
             total: torch.Tensor | None = None, held: torch.Tensor | None = None) -> torch.Tensor:
        """``_hidden``'s arguments (the windows as written) -> logits (B, T, V)."""
        return self.head(self._hidden(tokens, genre, start, caches, offset, total, held))

    def _hidden(self, tokens: torch.Tensor, genre: torch.Tensor, start: int = 0,
                caches: list[KVCache] | None = None, offset: torch.Tensor | None = None,
                total: torch.Tensor | None = None, held: torch.Tensor | None = None,
                with_input: bool = False,
                semitones: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) at positions start..start + T - 1 of the window, after ``offset`` (B,) time steps of
        the piece, ``total`` (B,) its asked length in steps (``NO_LENGTH``: none), ``held`` (B, P) bool pitches
        sounding before the window, ``semitones`` (B,) the transposition applied to it (None: as written) -> the
        last hidden states (B, T, W) (``with_input``: and the input embeddings (B, T, W), the sum of the
        token's, position's, genre's, clock's, time left's, held pitches' and key's); ``caches`` (one per layer,
        holding positions 0..start - 1) are extended."""
        t = tokens.shape[1]
        if start + t > self.cfg.context:
            raise ValueError(f"score tier: {start + t} events exceed the context of {self.cfg.context}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)[None] + self.genre(genre)[:, None]  # (B, T, W)
        if self.clock is not None:
            x = x + self.clock(self.clock_ids(tokens, offset))
        if self.anchors is not None:
            x = x + self.anchor_clock(self.elapsed(tokens, offset))
        if self.remain is not None:
            tot = torch.full_like(genre, NO_LENGTH) if total is None else total.to(genre)
            x = x + self.remain(self.remain_id(tot[:, None] - self.elapsed(tokens, offset), tot[:, None]))
        if self.held is not None:
            x = x + self.held(self.held_after(tokens, held).to(x.dtype))
        if self.key is not None:
            moved = torch.zeros_like(genre) if semitones is None else semitones.to(genre)  # (B,)
            x = x + self.key(moved + self.as_written)[:, None]
        x0, x = x, self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return (self.ln_f(x), x0) if with_input else self.ln_f(x)  # (B, T, W)

    def forward(self, tokens: torch.Tensor, genre: torch.Tensor, offset: torch.Tensor | None = None,
                total: torch.Tensor | None = None, held: torch.Tensor | None = None,
                with_left: bool = False,
                semitones: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) long, genre (B,) long, offset (B,) long time steps of the piece before the window (None:
        windows that start the piece), total (B,) long asked length of the piece in steps (``NO_LENGTH`` or
        None: not asked), held (B, P) bool pitches sounding before the window (None: none), semitones (B,) long
        the transposition the augmentation applied (None: as written; read by a model with ``transpositions``)
        -> logits (B, T, V) of each next event; ``with_left`` (a model with ``length_head``): also the time-left
        logits (B, T, L) after each event (``remain_id``'s buckets; bucket 0, "no length", is never a target)."""
        if tokens.dim() != 2 or genre.shape != tokens.shape[:1]:
            raise ValueError(f"score tier: tokens (B, T) and genre (B,), got {tuple(tokens.shape)} and "
                             f"{tuple(genre.shape)}")
        if with_left and self.left is None:
            raise ValueError("score tier: with_left needs a model with length_head")
        if semitones is not None and self.key is not None and int(semitones.abs().max()) > self.as_written:
            raise ValueError(f"score tier: transpositions beyond +-{self.as_written} semitones")
        if not with_left:
            return self.head(self._hidden(tokens, genre, offset=offset, total=total, held=held, semitones=semitones))
        h, x0 = self._hidden(tokens, genre, offset=offset, total=total, held=held, with_input=True,
                             semitones=semitones)
        return self.head(h), self._left(h, x0)

    def _left(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The length head: hidden states and input embeddings (B, T, W), both detached (the events' model is
        not bent to it; the inputs hand it the genre and the clock, which the states need not keep) -> (B, T, L)."""
        return self.left(torch.cat([h.detach(), x0.detach()], dim=-1))

    def left_targets(self, tokens: torch.Tensor, offset: torch.Tensor | None, length: torch.Tensor) -> torch.Tensor:
        """The length head's targets: tokens (B, T), offset (B,), length (B,) the piece's length in steps
        (``NO_LENGTH``: an excerpt) -> (B, T) long, the bucket of the time left to END after each token, -1 where
        there is none (an excerpt, PAD, the END closing a piece)."""
        elapsed = self.elapsed(tokens, offset)
        length = length.to(elapsed)[:, None]
        ids = self.remain_id(length - elapsed, length)
        bad = (length < 0) | (tokens == self.cfg.pad_token) | ((tokens == self.cfg.end_token) & (elapsed > 0))
        return torch.where(bad, torch.full_like(ids, -1), ids)

    def left_bucket_steps(self, bucket: int, u: float) -> float:
        """The time left a bucket of ``remain_id`` stands for, at ``u`` in [0, 1) through it (0: its start), in
        steps; the last bucket (all longer times) is read as one bucket wide."""
        unit = max(1, self.cfg.clock_steps // 4)
        lo, hi = ((bucket - 1 + k) / REMAIN_PER_OCTAVE for k in (0, 1))
        a, b = unit * (2.0 ** lo - 1.0), unit * (2.0 ** hi - 1.0)
        return a + (b - a) * u

    @torch.inference_mode()
    def choose_length(self, genre: int, seed: int = 0, prompt: list[int] | None = None, min_steps: int = 0,
                      temperature: float = 1.0) -> int:
        """The length (in time steps, the prompt's included) the tier chooses for a piece of ``genre`` after
        ``prompt`` (events; none: from the start), drawn from its length head at the prompt's last event, at
        least ``min_steps`` more than the prompt.  For ``generate(length_steps=...)``."""
        if self.left is None:
            raise ValueError("score tier: choose_length needs a model with length_head")
        cfg = self.cfg
        seq = [cfg.end_token] + [int(t) for t in (prompt or []) if t != cfg.end_token]
        w0 = max(0, len(seq) - cfg.context)
        device = self.tok.weight.device
        before = int(self.token_steps(torch.tensor(seq[:w0])).sum()) if w0 else 0
        held = _Held(cfg)
        for tok in seq[1:w0]:
            held.update(tok)
        was_training = self.training
        self.eval()
        try:
            h, x0 = self._hidden(torch.tensor([seq[w0:]], device=device), torch.tensor([genre], device=device),
                                 offset=torch.tensor([before], device=device),
                                 held=held.mask(device)[None] if self.held is not None else None, with_input=True)
            logits = self._left(h, x0)[0, -1].float()
        finally:
            self.train(was_training)
        logits[0] = -math.inf  # "no length" is not a length
        gen = torch.Generator(device="cpu").manual_seed(int(seed) * 7919 + 13)
        probs = torch.softmax(logits.cpu() / max(temperature, 1e-6), dim=-1)
        bucket = int(torch.multinomial(probs, 1, generator=gen))
        left = self.left_bucket_steps(bucket, float(torch.rand((), generator=gen)))
        elapsed = int(self.token_steps(torch.tensor(seq)).sum())
        return elapsed + max(int(round(left)), int(min_steps), 1)

    # ------------------------------------------------------------------------- sampling

    @torch.inference_mode()
    def generate(self, genre: int, max_events: int, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
                 prompt: list[int] | None = None, max_seconds: float | None = None,
                 seconds_of: Callable[[int], float] | None = None, min_seconds: float = 0.0,
                 length_steps: int | None = None, guidance: float = 0.0, kernel: bool = True) -> list[int]:
        """Sample a score: ``prompt`` (a trailing END dropped) followed by new events, ending with END.

        One step per event through a key/value cache.  Stops at the model's own END (kept), or after
        ``max_events`` new events or before the event that would pass ``max_seconds`` of new music
        (``seconds_of(token)``: seconds a token advances), then appends END.  Past ``context`` events
        the window slides: the last ``context // 2`` are prefilled again.  ``temperature`` 0 is greedy.
        END is not drawn before ``min_seconds`` of new music (``seconds_of`` needed).  ``length_steps``:
        the length the whole piece (prompt included) is asked to have, in time steps, for a model with
        ``length_buckets`` (ignored by one without; None: not asked).  ``guidance`` W > 0 (a genre asked):
        classifier-free guidance, each event drawn from ``l_u + (1 + W) (l_c - l_u)`` of the logits with the
        genre (l_c) and with "no genre" (l_u, the genre dropout's twin, run beside it as a second row).
        ``kernel``: the steps between prefills run on the numba kernel (``models/score_tier_kernel.py``, several
        times faster; equal to the torch steps within float tolerance) where the model allows it; False: torch.
        """
        cfg = self.cfg
        if not 0 <= genre <= cfg.n_genres:
            raise ValueError(f"score tier: genre id {genre} is not in 0..{cfg.n_genres} ({cfg.n_genres} = no genre)")
        if (max_seconds is not None or min_seconds > 0) and seconds_of is None:
            raise ValueError("score tier: max_seconds and min_seconds need seconds_of (token -> seconds)")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"score tier: temperature >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
        if not guidance >= 0 or math.isinf(guidance):
            raise ValueError(f"score tier: guidance is a finite W >= 0, got {guidance}")
        if length_steps is not None and length_steps < 1:
            raise ValueError(f"score tier: length_steps is a positive number of time steps, got {length_steps}")
        prompt = [int(t) for t in (prompt or [])]
        if prompt and prompt[-1] == cfg.end_token:
            prompt = prompt[:-1]
        bad = [t for t in prompt if not 0 <= t < cfg.vocab_size or t in (cfg.pad_token, cfg.end_token)]
        if bad:
            raise ValueError(f"score tier: the prompt holds {bad[0]}, not an event (END only at its end, no PAD)")
        from models.fused import one_blas_thread  # local: the fused engine's numba code loads on first use

        was_training = self.training
        self.eval()
        try:
            with one_blas_thread():  # the kernel's BLAS calls: OpenBLAS's threads spin against a busy machine
                return self._sample(genre, max_events, temperature, top_p, seed, prompt, max_seconds, seconds_of,
                                    min_seconds, NO_LENGTH if length_steps is None else int(length_steps),
                                    guidance if genre != self.unconditional else 0.0, kernel)
        finally:
            self.train(was_training)

    def _sample(self, genre, max_events, temperature, top_p, seed, prompt, max_seconds, seconds_of,
                min_seconds=0.0, total=NO_LENGTH, guidance=0.0, kernel=True) -> list[int]:
        cfg = self.cfg
        device = self.tok.weight.device
        kern = None  # the numba steps (``models/score_tier_kernel.py``) of a CPU float32 model, numba installed;
        if kernel:  # every config option is covered (the embeddings stay in torch: ``_embed_step``); else ``_step``
            try:
                from models.score_tier_kernel import StepKernel, unavailable  # local: numba's start-up, optional
            except ImportError:  # no numba
                pass
            else:
                kern = StepKernel.from_model(self) if unavailable(self) is None else None
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        rows = [int(genre), self.unconditional] if guidance > 0 else [int(genre)]  # guidance: the "no genre" twin
        g = torch.tensor(rows, device=device)
        tot = torch.full((len(rows),), total, device=device)

        def guided(logits: torch.Tensor) -> torch.Tensor:  # (rows, V) -> (V,): the stages' guidance formula
            return guide(logits, 1, guidance)[0]

        seq = [cfg.end_token] + prompt
        steps = [0]  # steps[i]: time steps of seq[1..i] (the clock after seq[i])
        for tok in prompt:
            steps.append(steps[-1] + self._steps_of(tok))
        held = _Held(cfg)  # pitches sounding after the newest event
        for tok in prompt:
            held.update(tok)
        w0 = 0 if len(seq) <= cfg.context else len(seq) - cfg.context // 2  # window start in seq

        h0, h0_end = _Held(cfg), 1  # pitches sounding after seq[1:h0_end] (the window start only moves on)

        def prefill() -> tuple[torch.Tensor, list[KVCache]]:
            nonlocal h0_end
            caches = [KVCache() for _ in self.blocks]
            before = torch.tensor([steps[w0 - 1] if w0 > 0 else 0], device=device)
            for tok in seq[h0_end:w0]:  # sounding before the window (a window starts after the piece's first END)
                h0.update(tok)
            h0_end = max(h0_end, w0)
            held0 = h0.mask(device)[None].expand(len(rows), -1) if self.held is not None else None
            window = torch.tensor([seq[w0:]] * len(rows), device=device)
            out = guided(self._run(window, g, 0, caches, before.expand(len(rows)), tot, held0)[:, -1])
            if kern is not None:
                kern.load(caches)  # the kernel's steps go on from the torch prefill's keys and values
            return out, caches

        logits, caches = prefill()
        seconds, new = 0.0, 0
        while True:
            if new >= max_events:
                break
            tok = self._draw(logits, temperature, top_p, gen, allow_end=seconds >= min_seconds,
                             keep_end=total == NO_LENGTH or not self.cfg.length_buckets)
            if max_seconds is not None and seconds + seconds_of(tok) > max_seconds + 1e-9:
                break
            seq.append(tok)
            steps.append(steps[-1] + self._steps_of(tok))
            held.update(tok)
            new += 1
            if tok == cfg.end_token:
                return seq[1:]
            if seconds_of is not None:
                seconds += seconds_of(tok)
            if len(seq) - w0 > cfg.context:  # the window is full: slide
                w0 = len(seq) - cfg.context // 2
                logits, caches = prefill()
            elif kern is not None:
                logits = guided(kern.step(self._embed_step(tok, len(seq) - 1 - w0, steps[-1], g, total, held)))
            else:
                logits = guided(self._step(tok, len(seq) - 1 - w0, steps[-1], g, caches, total, held))
        return seq[1:] + [cfg.end_token]

    def _embed_step(self, tok: int, pos: int, clock_steps: int, genre: torch.Tensor, total: int = NO_LENGTH,
                    held: "_Held | None" = None) -> torch.Tensor:
        """The input of one event (``_step``'s arguments) -> (B, W): the summed embeddings ``_hidden`` computes
        for it (the input of ``_step``'s blocks and of the kernel's, ``models/score_tier_kernel.py``)."""
        cfg = self.cfg
        x = self.tok.weight[tok] + self.pos.weight[pos] + self.genre.weight[genre]  # (B, W)
        if self.clock is not None:
            x = x + self.clock.weight[min(clock_steps // cfg.clock_steps, cfg.clock_buckets - 1)]
        if self.anchors is not None:
            x = x + self.anchor_clock(torch.tensor(clock_steps))
        if self.remain is not None:
            x = x + self.remain.weight[int(self.remain_id(torch.tensor(total - clock_steps), torch.tensor(total)))]
        if self.held is not None and held is not None and held.pitches:
            x = x + self.held.weight[:, sorted(held.pitches)].sum(1)
        if self.key is not None:
            x = x + self.key.weight[self.as_written]
        return x

    def _step(self, tok: int, pos: int, clock_steps: int, genre: torch.Tensor, caches: list[KVCache],
              total: int = NO_LENGTH, held: "_Held | None" = None) -> torch.Tensor:
        """Logits (B, V) after one event at window position ``pos`` for each of the B rows of ``genre`` (B,) (the
        same event, ``clock_steps`` of the piece after it, ``total`` the asked length, ``held`` the pitches
        sounding after it), the caches extended: ``_run`` for one event, in functional calls (a step of sampling
        is ~20 tiny ops: the modules' call overhead was a fifth of it).  Equal to ``_run`` within float
        tolerance (tested).  Sampling steps on the kernel instead where it can (``_sample``)."""
        cfg, w = self.cfg, self.cfg.width
        b = genre.shape[0]
        x = self._embed_step(tok, pos, clock_steps, genre, total, held).view(b, 1, w)
        d = w // cfg.n_heads
        for block, cache in zip(self.blocks, caches):
            a = block.attn
            h = F.layer_norm(x, (w,), block.ln1.weight, block.ln1.bias, block.ln1.eps)
            q, k, v = (z.view(b, 1, cfg.n_heads, d).transpose(1, 2) for z in F.linear(h, a.qkv.weight, a.qkv.bias)
                       .split(w, dim=2))  # (B, H, 1, D)
            k, v = cache.extend(k, v, cfg.context)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, w)
            x = x + F.linear(y, a.proj.weight, a.proj.bias)
            h = F.layer_norm(x, (w,), block.ln2.weight, block.ln2.bias, block.ln2.eps)
            up, down = block.mlp[0], block.mlp[2]
            x = x + F.linear(F.gelu(F.linear(h, up.weight, up.bias)), down.weight, down.bias)
        x = F.layer_norm(x, (w,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return F.linear(x, self.head.weight)[:, -1]  # (B, V)

    def _steps_of(self, tok: int) -> int:
        k = tok - self.cfg.shift_first
        return k + 1 if 0 <= k < self.cfg.n_shifts else 0

    def _draw(self, logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator,
              allow_end: bool = True, keep_end: bool = True) -> int:
        """One event from logits (V,): never PAD; greedy at temperature 0; else nucleus (top-p) sampling that
        keeps END (``keep_end``): the END of a piece whose length the model was not told is one event among a
        thousand, rarely inside the nucleus of a cadence's many possible next notes, and a nucleus that cut it
        would never let a piece end (measured: 0 of 20 scores ended at top-p 0.95).  Told the length, the model
        puts END inside the nucleus where the piece should end, and a nucleus that kept it everywhere would
        let a 1e-4 chance per event end long pieces early (measured: 2 of 3 asked 600 s ended before 25 s)."""
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
            if keep_end:
                keep |= idx == self.cfg.end_token  # ... and END
            probs = torch.zeros_like(probs).scatter_(0, idx[keep], p[keep])
        return int(torch.multinomial(probs, 1, generator=gen))

    @torch.no_grad()
    def events_bits(self, events: Sequence[int], genre: int, batch: int = 16,
                    length_given: bool = False) -> tuple[float, int]:
        """(total bits, events) of one piece read as ``[end_token] + events`` (``event_log_probs``), as a
        held-out measure in bits per event.  The piece's length is not given (as to the n-gram baselines)
        unless ``length_given`` (a model with ``length_buckets``)."""
        logp = self.event_log_probs(events, genre, batch, length_given)  # (N, V)
        targets = torch.tensor([int(t) for t in events], dtype=torch.long)
        return float(-logp.gather(1, targets[:, None]).sum() / LN2), len(targets)

    @torch.no_grad()
    def event_log_probs(self, events: Sequence[int], genre: int, batch: int = 16,
                        length_given: bool = False) -> torch.Tensor:
        """The distribution the model gives each event of one piece read as ``[end_token] + events``: (N, V)
        float32 log-probabilities on the CPU, row i before ``events[i]``.  Every event is scored once, in windows
        of ``context`` that advance by ``context // 2`` (each event after the first window sees at least
        ``context // 2`` events before it)."""
        cfg = self.cfg
        seq = [cfg.end_token] + [int(t) for t in events]
        n, half = len(seq) - 1, cfg.context // 2
        steps = self.token_steps(torch.tensor(seq)).cumsum(0).tolist()  # after seq[i]
        length = steps[-1] if length_given else NO_LENGTH
        starts = [0]  # window at s scores targets [s + context - half, s + context): right after the one before
        while starts[-1] + cfg.context < n:
            starts.append(starts[-1] + half)
        helds, h, done = [], _Held(cfg), 1  # pitches sounding before each window
        for s in starts:
            for tok in seq[done:s]:
                h.update(tok)
            done = max(done, s)
            helds.append(h.mask("cpu"))
        was_training = self.training
        self.eval()
        out = torch.zeros(n, cfg.vocab_size)
        try:
            for i in range(0, len(starts), batch):
                chunk = starts[i:i + batch]
                x, _, mask = window_batch([events] * len(chunk), chunk, cfg.context, cfg.end_token, cfg.pad_token)
                device = self.tok.weight.device
                offset = torch.tensor([steps[s - 1] if s > 0 else 0 for s in chunk], device=device)
                held = torch.stack(helds[i:i + len(chunk)]).to(device)
                logits = self(x.to(device), torch.full((len(chunk),), genre, device=device), offset,
                              torch.full((len(chunk),), length, device=device), held)
                logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # (B, context, V)
                for j, s in enumerate(chunk):
                    first = 0 if s == 0 else cfg.context - half  # the window before scored the rest
                    last = int(mask[j].sum())  # targets s .. s + last - 1 (PAD past the piece's end)
                    out[s + first:s + last] = logp[j, first:last]
        finally:
            self.train(was_training)
        return out

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


class _Held:
    """The pitches sounding after each event of a piece being sampled (``held_after`` one event at a time)."""

    def __init__(self, cfg: ScoreTierConfig):
        self.cfg, self.pitches = cfg, set()

    def update(self, tok: int) -> None:
        c = self.cfg
        if tok == c.end_token:
            self.pitches.clear()
        elif c.n_pitches and 0 <= tok - c.note_on_first < c.n_pitches:
            self.pitches.add(tok - c.note_on_first)
        elif c.n_pitches and 0 <= tok - c.note_off_first < c.n_pitches:
            self.pitches.discard(tok - c.note_off_first)

    def mask(self, device) -> torch.Tensor:
        m = torch.zeros(self.cfg.n_pitches, dtype=torch.bool, device=device)
        m[sorted(self.pitches)] = True
        return m


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
