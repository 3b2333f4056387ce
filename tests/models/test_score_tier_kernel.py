"""models/score_tier_kernel.py: the numba step of the score tier equals its torch step (``_step``), and sampling
on it draws what sampling on torch draws."""

from __future__ import annotations

import pytest
import torch

import models.score_tier as score_tier
from models.score_tier import NO_LENGTH, KVCache, ScoreTierConfig, ScoreTransformer, _Held
from models.score_tier_kernel import MAX_WIDTH, StepKernel, unavailable

V, END, PAD = 40, 1, 0  # a toy vocabulary: tokens 2..5 advance 1..4 time steps, 10 + p / 20 + p strike / end pitch p
ATOL = 1e-4  # float32 logits of order 1: the kernel sums in other orders than torch (BLAS, its own loops)

CLOCK = dict(clock_buckets=5, clock_steps=3, shift_first=2, n_shifts=4)
SMOOTH = dict(clock_anchors=6, clock_steps=3, shift_first=2, n_shifts=4)
NOTES = dict(held_input=True, note_on_first=10, note_off_first=20, n_pitches=10)
OPTIONS = {"plain": {}, "clock-length-held": dict(CLOCK, length_buckets=40, **NOTES),
           "smooth-key-length-head": dict(SMOOTH, length_buckets=40, length_head=True, transpositions=5, **NOTES)}


def model(context: int = 16, seed: int = 0, n_heads: int = 2, width: int = 32, **kw) -> ScoreTransformer:
    torch.manual_seed(seed)
    cfg = ScoreTierConfig(vocab_size=V, n_genres=3, end_token=END, pad_token=PAD, n_layers=2, n_heads=n_heads,
                          width=width, context=context, dropout=0.1, **kw)
    m = ScoreTransformer(cfg).eval()
    with torch.no_grad():  # non-trivial layer norms and biases (a fresh model's are 1 and 0)
        for name, p in m.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def events(n: int, seed: int) -> list[int]:
    """n random events (no END, no PAD)."""
    return torch.randint(2, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("rows", [[1], [1, 3]], ids=["one-row", "guidance-twin"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_kernel_steps_equal_torch_steps_across_slides(options, rows):
    """40 events stepped after a prefill, on torch (``_step``) and on the kernel from a copy of the same caches,
    give the same logits (B, V) (ATOL; ``_step`` itself equals ``_run`` of the one event, 1e-5, as sampling's
    tests of the torch path had it); when the window is full all prefill its last context // 2 events again
    (as ``_sample`` slides), and the kernel refuses a step into a full cache, as ``KVCache.extend`` does."""
    m = model(**options, n_heads=4 if len(rows) == 2 else 2)
    cfg, g = m.cfg, torch.tensor(rows)
    total = 30 if cfg.length_buckets else NO_LENGTH
    kern = StepKernel.from_model(m)
    seq = [END] + events(45, seed=len(rows))
    held, steps = _Held(cfg), [0]  # after seq[i]
    for tok in seq[1:]:
        steps.append(steps[-1] + m._steps_of(tok))
    w0, first, slides, compared = 0, 5, 0, 0
    with torch.inference_mode():

        def tensor(value: int) -> torch.Tensor:  # (B,)
            return torch.full((len(rows),), value)

        def prefill(end: int) -> tuple[list[KVCache], list[KVCache]]:  # the window seq[w0:end] -> torch's caches
            h0 = _Held(cfg)
            for tok in seq[1:w0]:
                h0.update(tok)
            both = [[KVCache() for _ in m.blocks] for _ in range(2)]  # _step's, _run's
            for caches in both:
                m._run(torch.tensor([seq[w0:end]] * len(rows)), g, 0, caches, tensor(steps[w0 - 1] if w0 else 0),
                       tensor(total), h0.mask("cpu")[None].expand(len(rows), -1))
            kern.load(both[0])  # the kernel goes on from a numpy copy
            return both[0], both[1]

        for tok in seq[1:first]:
            held.update(tok)
        caches, run_caches = prefill(first)
        for i in range(first, len(seq)):  # event seq[i] at window position i - w0
            tok, before = seq[i], held.mask("cpu")[None].expand(len(rows), -1)
            held.update(tok)
            if i - w0 >= cfg.context:  # the window is full: the kernel refuses, then both slide
                with pytest.raises(ValueError, match="full"):
                    kern.step(torch.zeros(len(rows), cfg.width))
                w0, slides = i + 1 - cfg.context // 2, slides + 1
                caches, run_caches = prefill(i + 1)
                continue
            want = m._step(tok, i - w0, steps[i], g, caches, total, held)  # (B, V)
            run = m._run(torch.tensor([[tok]] * len(rows)), g, i - w0, run_caches, tensor(steps[i - 1]),
                         tensor(total), before)[:, -1]
            assert torch.allclose(want, run, atol=1e-5, rtol=0), i
            got = kern.step(m._embed_step(tok, i - w0, steps[i], g, total, held))
            assert got.shape == want.shape == (len(rows), V) and got.dtype == torch.float32
            assert torch.allclose(got, want, atol=ATOL, rtol=0), (i, float((got - want).abs().max()))
            compared += 1
    assert slides >= 2 and compared >= 30


def teacher_forced(m: ScoreTransformer, monkeypatch, path: list[int], kernel: bool, **kw) -> list[torch.Tensor]:
    """The logits (B, V) of every step of ``generate`` (the rows before guidance combines them), its draws
    replaced by the events of ``path``: both engines then walk the same events whatever their floats."""
    seen: list[torch.Tensor] = []
    guide, drawn = score_tier.guide, iter(path)
    with monkeypatch.context() as mp:
        mp.setattr(score_tier, "guide", lambda out, *a: (seen.append(out.clone()), guide(out, *a))[1])
        mp.setattr(m, "_draw", lambda *a, **k: next(drawn))
        out = m.generate(genre=1, max_events=len(path), kernel=kernel, **kw)
    assert out[-len(path) - 1:] == path + [END]
    return seen


@pytest.mark.parametrize("guidance", [0.0, 1.5], ids=["one-row", "guided"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_sampling_on_the_kernel_gives_torchs_logits_and_draws(options, guidance, monkeypatch):
    """Along one teacher-forced path of 40 events after a prompt (two slides at context 16), every step's
    logits are torch's (ATOL) with the kernel on; and sampled freely, both give the same events for a few
    seeds.  (Bitwise-equal draws need no two candidate events within float error of a boundary of the
    draw's CDF: with differences ~1e-6 that is ~1e-5 of the draws; the logits comparison is the exact check.)"""
    m = model(**options)
    kw = dict(prompt=[5, 16, 7], guidance=guidance, length_steps=30 if m.cfg.length_buckets else None)
    path = events(40, seed=7)
    on = teacher_forced(m, monkeypatch, path, True, **kw)
    off = teacher_forced(m, monkeypatch, path, False, **kw)
    assert len(on) == len(off) == 41 and on[0].shape == (2 if guidance else 1, V)
    for k, (a, b) in enumerate(zip(on, off)):
        assert torch.allclose(a, b, atol=ATOL, rtol=0), (k, float((a - b).abs().max()))
    for seed in range(3):
        free = dict(kw, temperature=1.5, top_p=0.95, seed=seed)
        assert m.generate(1, 40, kernel=True, **free) == m.generate(1, 40, kernel=False, **free), seed


def test_the_kernel_packs_a_copy_and_falls_back_where_it_cannot_run(monkeypatch):
    """Weights are packed per ``generate`` (a trained-on model samples with its new weights); a float64 model
    is not the kernel's (float32 only) and samples on ``_step``, as with ``kernel=False``; nor is one wider than
    ``MAX_WIDTH``."""
    m = model(**OPTIONS["clock-length-held"])
    kw = dict(temperature=1.5, top_p=1.0, seed=2, length_steps=30, seconds_of=lambda tok: 0.0,
              min_seconds=1.0)  # no END: 30 events
    before = m.generate(1, 30, **kw)
    with torch.no_grad():
        m.tok.weight.mul_(3.0)
    after = m.generate(1, 30, **kw)
    assert after == m.generate(1, 30, kernel=False, **kw) and after != before
    assert unavailable(m) is None
    assert "faster" in unavailable(model(width=MAX_WIDTH * 2, n_heads=2))  # wider: torch's products are faster
    wide = model(**OPTIONS["clock-length-held"]).double()
    assert "float32" in unavailable(wide)
    packed = []
    monkeypatch.setattr(StepKernel, "from_model", classmethod(lambda cls, mm: packed.append(mm)))
    assert wide.generate(1, 30, kernel=True, **kw) == wide.generate(1, 30, kernel=False, **kw)
    assert packed == []  # never packed: it stepped on torch
