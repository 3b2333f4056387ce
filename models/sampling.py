"""The sampling loop beside the streaming engine (nanoGPT's ``GPT.generate``): one stage, several
streams as one batch, step by step.

- The head samples (``stage.head.sample``: temperature, top-p); float heads (PCM) sample floats.
- Classifier-free guidance (``guidance = W > 0``): every stream gets an unconditional twin in the
  same batch (``Conditioning.twin``) and the outputs are combined as
  ``l = l_u + (1 + W) * (l_c - l_u)``.  Guidance needs logits: the head is checked before the batch
  is doubled, so a float-output stage never runs the twin.
- End of piece (stages with an END class): END is never drawn by chance (at one draw per sample,
  even a small END probability would end pieces within seconds); with ``free_length`` a stream ends
  where the model gives END a probability of at least ``end_threshold``.  Ended streams continue
  as silence; when all have ended the loop stops, keeping whole ``round_to`` blocks.
- A prompt ``(B, P)`` is fed instead of samples for ``t < P``.
- Tier prior (a stage reading the tier below, ``tier_prior = sigma > 0``): the logits get
  ``-(v_c - g_t)^2 / (2 sigma^2)``, where v_c is class c's decoded value and g_t the tier below
  interpolated to the stage's rate.  The cascade's contract is that the fine tier resampled is the
  coarse one; the prior keeps a stream near it.  With sigma well above the real deviations (the
  detail a fine stage adds is ~0.01-0.05 in decoded units) it barely touches normal steps, but a
  fine stage's own-past loop can no longer run away into a full-scale oscillation or noise after
  an unusual coarse sample (measured: a stage-1 limit cycle at 780 Hz, tier SNR -10 dB, became 26 dB).
- Engines: ``engine="fused"`` (default) runs the whole loop above in the fused kernel
  (models/fused.py) when the stage allows it, else the reference loop below after a one-line
  warning; ``engine="reference"`` always runs the reference.
- Random numbers (categorical heads): the generator gives each stream a seed
  (``stream_seeds``); the stream's uniform of step t is a counter-based hash of seed and t
  (``stream_uniforms``), and the head draws by inverse CDF from it.  Both engines draw the same
  way, so the same seed gives the same samples, however the streams are batched or grouped.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from models.conditioning import Conditioning
from models.draw import Draw, prior_band, prior_scale, prior_values, step_uniforms, stream_seeds
from models.fused import FusedStream, unavailable

ENGINES = ("fused", "reference")


def guide(out: torch.Tensor, batch: int, guidance: float) -> torch.Tensor:
    """Combine the conditional rows ``[:batch]`` and unconditional rows ``[batch:]`` of (2B, C).

    ``l = l_u + (1 + W) (l_c - l_u)``; without twins (``out`` has ``batch`` rows) it is ``out``.
    """
    if out.shape[0] == batch:
        return out
    l_c, l_u = out[:batch], out[batch:]
    return l_u + (1.0 + guidance) * (l_c - l_u)


def uses_guidance(stage, guidance: float, conditioned: bool) -> bool:
    """Run unconditional twins: guidance asked for, something to guide, and a head with logits."""
    return guidance > 0 and conditioned and not bool(getattr(stage.head, "float_input", False))


@dataclass
class Sampled:
    x: torch.Tensor  # (B, n') codes (int64) or floats in [-1, 1] (float heads); n' <= n
    lengths: list[int]  # samples of each stream (n unless the model ended it)
    twin: bool  # the unconditional twins ran
    engine: str = "reference"  # the engine that ran ("fused" or "reference")


def sample_stage(stage, n: int, batch: int, cond: Conditioning, draw: Draw = Draw(), *, no_genre: int,
                 conditioned: bool = False, prompt: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, chunk: int | None = None,
                 progress: Callable[[int], None] | None = None, engine: str = "fused", workers: int = 1,
                 wait_below: Callable[[int], None] | None = None,
                 publish: Callable[[np.ndarray, int], None] | None = None) -> Sampled:
    """Sample ``n`` samples of ``stage`` for ``batch`` streams conditioned on ``cond`` (batch rows),
    chosen as ``draw`` says (``models.draw.Draw``: guidance, temperature, top-p, tier prior, ends, seeds).

    ``conditioned``: the streams have a genre or roll to guide (``no_genre``: the twins' genre id).
    ``engine``: "fused" or "reference" (module docstring); ``workers``: the fused engine runs the
    streams in up to this many groups on threads (each stream's samples do not depend on it).
    ``draw.seeds`` (B,): the streams' seeds, else drawn from ``generator``.  A pipelined cascade
    (pipeline/generation/generate.py) runs the stages side by side: ``wait_below(j)`` returns once the tier
    below is final up to index j (``cond.below`` is being filled), ``publish(x, t)`` is told that
    samples [0, t) of ``x`` (B, n) are final.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    float_head = bool(getattr(stage.head, "float_input", False))
    twin = uses_guidance(stage, draw.guidance, conditioned)
    if twin:  # rows [batch:] are the unconditional twins: "no genre", roll dropped (or kept: ``draw.keep_roll``)
        cond = cond.twin(no_genre, keep_roll=draw.keep_roll)
    rows = 2 * batch if twin else batch
    chunk_kw = {} if chunk is None else {"chunk": chunk}
    end_code = getattr(stage, "end_code", None) if not float_head else None
    seeds = draw.seeds
    if seeds is None:
        seeds = stream_seeds(generator, batch)  # (B,) every engine draws them: the generator moves alike
    fused = engine == "fused" and fused_engine_ok(stage)
    if (wait_below is not None or publish is not None) and (not fused or workers > 1):
        raise ValueError("sample_stage: wait_below / publish (a pipelined cascade) need the fused engine, 1 worker")
    scale = 0.0 if float_head else prior_scale(stage, cond.below, draw.tier_prior)  # 0: no tier prior
    draw = dataclasses.replace(draw, batch=batch, twin=twin, prior_scale=scale, end_code=end_code, seeds=seeds)
    round_to = draw.round_to
    if fused:
        x, lengths, steps = _sample_fused(stage, n, cond, draw, prompt, chunk_kw, progress, workers,
                                          wait_below, publish)
        if steps < n:
            x = x[:, : max(min(n, round_to * math.ceil(max(lengths) / round_to)), round_to)]
        return Sampled(x, lengths, twin, "fused")
    prior = _TierPrior(stage, cond.below, n, scale) if scale else None  # its centre for the whole piece
    dtype = torch.float32 if float_head else torch.int64
    n_u = getattr(stage.head, "uniforms", 0)  # the head draws from the stream uniforms (else from generator)
    silence = stage.start_code
    x = torch.full((batch, n), silence, dtype=dtype)  # (B, n)
    state = _Ends(batch, n, silence, end_code)
    prev = torch.full((rows,), stage.start_code, dtype=dtype)  # (rows,)
    p_len = 0 if prompt is None else prompt.shape[1]
    steps = n
    with torch.inference_mode(), stage.streaming(rows, cond, **chunk_kw) as s:
        s.adapt_gain, s.n_forced, s.score_share = draw.adapt_gain, p_len, float(draw.score_share)
        s.anchor = (float(draw.scale_anchor), float(draw.anchor_ratio))
        s.scale_clip, s.share_power = float(draw.scale_clip), float(draw.share_power)
        s.note_floor = float(draw.note_floor)
        s.adapt_floor = float(draw.adapt_floor or s.adapt_floor)
        s.tail_floor, s.tail_start = float(draw.tail_floor), draw.tail_start
        for t in range(n):
            out = s.step(prev)  # (rows, C)
            if t < p_len:
                xt = prompt[:, t].to(dtype)  # (B,) primed: the prompt's own sample
            else:
                out = guide(out[:batch] if not twin else out, batch, draw.guidance)  # (B, C)
                if prior is not None:
                    out = prior(out, t)
                confident = state.confident(out, draw.free_length and t >= draw.min_length, draw.end_threshold)
                u = {} if not n_u else {"u": torch.from_numpy(step_uniforms(seeds, t, n_u))}  # (B,) or (B, 2)
                xt = stage.head.sample(state.mask(out), temperature=draw.temperature, top_p=draw.top_p,
                                       generator=generator, **u)
                xt = state.apply(xt, confident, t, draw.free_length)
            x[:, t] = xt
            prev = torch.cat([xt, xt]) if twin else xt
            if progress is not None:
                progress(t + 1)
            if draw.free_length and bool(state.ended.all()):
                steps = t + 1
                break
    if steps < n:  # every stream ended: keep whole blocks (silence after each end)
        keep = min(n, round_to * math.ceil(int(state.lengths.max()) / round_to))
        x = x[:, : max(keep, round_to)]
    return Sampled(x, [int(v) for v in state.lengths], twin)


def _sample_fused(stage, n: int, cond: Conditioning, draw, prompt, chunk_kw: dict, progress,
                  workers: int, wait_below=None, publish=None) -> tuple[torch.Tensor, list[int], int]:
    """The fused engine over the B streams, in up to ``workers`` groups of streams on threads (the
    kernel releases the GIL; each group has its own stream state; twins stay with their stream)."""
    b = draw.batch
    groups = [g for g in np.array_split(np.arange(b), max(1, min(int(workers), b))) if len(g)]

    def run(k: int, idx: np.ndarray):
        rows = np.concatenate([idx, idx + b]) if draw.twin else idx
        sub = draw if len(groups) == 1 else dataclasses.replace(draw, batch=len(idx), seeds=draw.seeds[idx])
        c = cond if len(groups) == 1 else cond.rows(torch.from_numpy(rows))
        with torch.inference_mode():
            fs = FusedStream(stage, len(rows), c, wait_below=wait_below, **chunk_kw)
            return fs.sample(n, sub, prompt=None if prompt is None else prompt[idx],
                             progress=progress if k == 0 else None, publish=publish)

    if len(groups) == 1:
        return run(0, groups[0])
    with ThreadPoolExecutor(len(groups)) as pool:
        parts = list(pool.map(run, range(len(groups)), groups))
    x = torch.cat([p[0] for p in parts])  # groups are consecutive rows
    lengths = [v for p in parts for v in p[1]]
    return x, lengths, max(p[2] for p in parts)
_WARNED: set[str] = set()


def fused_engine_ok(stage) -> bool:
    """The fused engine can run ``stage``; otherwise one warning line (once per reason) on stderr."""
    reason = unavailable(stage)
    if reason is not None and reason not in _WARNED:
        _WARNED.add(reason)
        print(f"warning: fused engine unavailable, using the reference engine: {reason}", file=sys.stderr)
    return reason is None


class _TierPrior:
    """The tier prior of the module docstring: a Gaussian around the tier below, per step."""

    def __init__(self, stage, below: torch.Tensor, n: int, scale: float):
        self.band = prior_band(below, stage.factor, stage.classes, 0, n)  # (B, n)
        self.values, self.scale = prior_values(stage.classes), scale

    def __call__(self, out: torch.Tensor, t: int) -> torch.Tensor:
        """out (B, C) logits at step t -> with the prior added to the mu-law classes."""
        c = self.values.shape[0]
        pen = self.scale * (self.values[None, :] - self.band[: out.shape[0], t : t + 1]) ** 2  # (B, classes)
        return torch.cat([out[:, :c] - pen.to(out.dtype), out[:, c:]], dim=1)


class _Ends:
    """Which streams have ended (END class), and where."""

    def __init__(self, batch: int, n: int, silence, end_code: int | None):
        self.end_code, self.silence = end_code, silence
        self.ended = torch.zeros(batch, dtype=torch.bool)
        self.lengths = torch.full((batch,), n, dtype=torch.int64)

    def confident(self, out: torch.Tensor, allowed: bool, threshold: float) -> torch.Tensor | None:
        """(B,) bool: END has at least ``threshold`` probability (None when END may not end here)."""
        if self.end_code is None or not allowed:
            return None
        return torch.softmax(out.double(), -1)[:, self.end_code] >= threshold

    def mask(self, out: torch.Tensor) -> torch.Tensor:
        """The outputs with END never drawn by chance."""
        if self.end_code is None:
            return out
        out = out.clone()
        out[:, self.end_code] = -float("inf")
        return out

    def apply(self, xt: torch.Tensor, confident: torch.Tensor | None, t: int, free_length: bool) -> torch.Tensor:
        if confident is not None:
            xt = torch.where(confident, torch.full_like(xt, self.end_code), xt)
        if free_length and self.end_code is not None:
            new_end = (xt == self.end_code) & ~self.ended
            self.lengths[new_end] = t
            self.ended |= new_end
            xt = torch.where(self.ended, torch.full_like(xt, self.silence), xt)
        return xt
