"""The head seam: a head registered from outside (a plain Gaussian over decoded samples) trains,
streams (equal to the full pass), samples through the generation loop and is scored, with no
change to any other file."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import Stage
from models.config import stage_arch
from models.heads import HEADS, Head, register_head
from models.mulaw import mulaw_decode_torch, mulaw_encode_torch
from tests.helpers_models import FACTOR, FPS, GENRES, inputs, stage_cfg  # noqa: F401


class GaussianHead(Head):
    """Toy head: N(mean, exp(log_scale)) over the decoded sample; reads and writes floats."""

    kind = "toy_gaussian"
    float_input = True
    channels = 2

    @classmethod
    def from_config(cls, cfg, classes: int) -> GaussianHead:
        return cls()

    @property
    def start_value(self) -> float:
        return 0.0

    def input_layer(self, channels: int) -> nn.Module:
        return nn.Linear(1, channels)

    def embed(self, layer, x):
        return layer(x.float().unsqueeze(-1))  # (B, T, R)

    def stream_input(self, layer, dtype):
        def step(x_prev, out):
            out.copy_(layer(x_prev.to(dtype).view(-1, 1)))

        return step

    def codes_to_input(self, codes, bits):
        return mulaw_decode_torch(codes, bits)

    def input_to_codes(self, x, bits):
        return mulaw_encode_torch(x, bits)

    def nll_bits(self, out, x):
        mean, log_s = out.float().unbind(1)  # (B, T) each
        z = (x.float() - mean) * torch.exp(-log_s)
        return (0.5 * z * z + log_s + 0.5 * math.log(2 * math.pi)) / math.log(2.0)

    def sample(self, out_t, temperature=1.0, top_p=1.0, generator=None):
        mean, log_s = out_t.float().unbind(-1)  # (B,)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return (mean + temperature * torch.exp(log_s) * noise).clamp(-1, 1)


@pytest.fixture
def toy_head():
    register_head(GaussianHead)
    yield GaussianHead.kind
    HEADS.pop(GaussianHead.kind)


def test_toy_head_trains_streams_and_scores(toy_head):
    from pipeline.corpus.batches import model_x
    from pipeline.generation.generate import run_stage

    arch = stage_arch({**stage_cfg(use_genre=True, use_tier_below=True, history={"enabled": True}), "head": toy_head})
    arch.check()  # the config asks the registry: the new head is known
    torch.manual_seed(0)
    st = Stage(arch, index=1, n_genres=GENRES, factor=FACTOR, roll_fps=FPS, classes=256)
    assert st.head.kind == toy_head and st.end_code is None and st.linear is None
    d = inputs(st, 128, b=2)
    codes = torch.randint(96, 160, (2, 128), generator=torch.Generator().manual_seed(3))
    x = model_x(codes, st.head, 8)  # training's input path goes through the head: floats
    assert x.dtype == torch.float32
    # trains: a few optimiser steps lower the bits
    opt = torch.optim.Adam(st.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        bits = st.head.nll_bits(st(x, genre=d["genre"], below=d["below"]), x).mean()
        opt.zero_grad()
        bits.backward()
        opt.step()
        losses.append(float(bits.detach()))
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)
    # streams: the step equals the full pass
    st.eval()
    with torch.no_grad():
        full = st(x, genre=d["genre"], below=d["below"])  # (B, 2, T)
        steps = []
        with st.streaming(batch=2, genre=d["genre"], below=d["below"], chunk=32) as s:
            prev = torch.full((2,), st.start_code)
            for t in range(x.shape[1]):
                steps.append(s.step(prev))
                prev = x[:, t]
    torch.testing.assert_close(torch.stack(steps, 2), full, rtol=1e-4, atol=1e-5)
    # scores: finite bits per sample
    assert torch.isfinite(st.head.nll_bits(full, x)).all()
    # samples through the generation loop (floats), and back to codes for a stage above
    res = run_stage(st, 40, 2, genre=d["genre"], below=d["below"][:, :10],
                    generator=torch.Generator().manual_seed(0))
    assert res.x.shape == (2, 40) and res.x.is_floating_point() and res.x.abs().max() <= 1
    assert st.head.input_to_codes(res.x, 8).dtype == torch.int64
