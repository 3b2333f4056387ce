"""models/predictor.py: the linear-prediction path + hybrid (discretized logistic) distribution.

Streaming == forward, causality, lookahead, the distribution itself against a float64 reference,
the least-squares warm start, checkpoints, cost accounting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models import Stage, load_stage, save_stage
from models.mulaw import decode_values, mulaw_values
from models.predictor import ADAPT_DECAY, ADAPT_FLOOR, ADAPT_TAPS, LOG_S_ADAPT_INIT, LinearPath, lstsq_init
from tests.helpers_models import (  # noqa: F401
    CLASSES,
    FACTOR,
    FPS,
    GENRES,
    RATE,
    WIDE,
    changed_positions,
    inputs,
    randomize_biases,
    stage_cfg,
)

ORDER = 6


def lin_cfg(**over) -> dict:
    """The shared small config with the linear path on (order ORDER, below half-window 3)."""
    return stage_cfg(**{"linear_order": ORDER, "linear_below": 3, **over})


def make_stage(index=1, seed=0, dtype=torch.float32, classes=CLASSES, randomize=True, **over) -> Stage:
    torch.manual_seed(seed)
    st = Stage(lin_cfg(**over), index=index, n_genres=GENRES, factor=FACTOR if index else 1,
               roll_fps=FPS, classes=classes)
    if randomize:  # non-trivial biases, learned vectors, taps and mu_nn / log_s rows
        randomize_biases(st)
        with torch.no_grad():
            if st.linear is not None:
                if st.linear.below_weight is not None:
                    st.linear.below_weight.normal_(0, 0.3)
                st.lin_out.weight.normal_(0, 0.3)
    return st.to(dtype).eval()


# ----------------------------------------------------------------------------- construction


def test_construction_and_defaults():
    st = make_stage(index=1, use_tier_below=True, conditioning={"lookahead": 2}, linear_below=3, randomize=False)
    lin = st.linear
    assert isinstance(lin, LinearPath) and lin.order == ORDER
    assert (lin.back, lin.ahead, lin.window) == (3, 2, 6)  # ahead capped at the conditioning lookahead
    assert tuple(lin.below_weight.shape) == (FACTOR, 6)
    assert st.out2.out_channels == CLASSES == st.head.channels and st.lin_out.out_channels == 2
    assert lin.past_weight[0].item() == 1.0 and lin.past_weight[1:].abs().sum().item() == 0.0
    assert lin.below_weight.abs().sum().item() == 0.0
    assert st.lin_out.weight.abs().sum().item() == 0.0
    assert st.lin_out.bias[0].item() == 0.0 and st.lin_out.bias[1].item() == pytest.approx(math.log(0.05))
    # decode table: pipeline.corpus.audio.mulaw_decode values, end code -> 0
    from pipeline.corpus.audio import mulaw_decode

    np.testing.assert_allclose(mulaw_values(256), mulaw_decode(np.arange(256), 8, dtype=np.float64), rtol=0,
                               atol=1e-15)
    assert decode_values(32, True)[-1] == 0.0 and mulaw_values(32)[16] == 0.0  # silence decodes to 0
    st0 = make_stage(index=0, end_class=True, randomize=False)
    assert st0.linear.below_weight is None and st0.linear.decode_table.shape == (CLASSES + 1,)
    assert st0.out2.out_channels == CLASSES + 1
    # off: linear_order 0, a config without the key (an old model.json), the mixture head
    assert make_stage(index=1, linear_order=0).linear is None
    cfg = lin_cfg()
    del cfg["linear_order"], cfg["linear_below"]
    old = Stage(cfg, index=1, n_genres=GENRES, factor=FACTOR, roll_fps=FPS, classes=CLASSES)
    assert old.linear is None and old.config["linear_order"] == 0 and old.lin_out is None
    assert make_stage(index=1, head="logistic_mixture", mixtures=3).linear is None
    # new dataclass configs: on
    from pipeline.config import StageConfig

    assert Stage(StageConfig(rate=2000), 0, 2, 1, 100).linear.order == 32


# ----------------------------------------------------------------------------- streaming == forward

PATHS = {
    "past": (0, {}, {}),
    "past_end_roll": (0, {"end_class": True, "use_roll": True, "use_genre": True}, {"roll": True, "genre": True}),
    "below": (1, {"use_tier_below": True}, {"below": True}),
    "below_wide": (1, {"use_tier_below": True, "linear_below": 7, "conditioning": {"lookahead": 5}},
                   {"below": True}),
    "below_all": (1, {"use_tier_below": True, "use_roll": True, "use_genre": True, "history": {"enabled": True},
                      "end_class": True}, {"below": True, "roll": True, "genre": True}),
    "below_dropped": (1, {"use_tier_below": True, "use_roll": True}, {"below": True, "roll": True, "drops": True}),
    "below_dropped_apart": (1, {"use_tier_below": True, "use_roll": True}, {"below": True, "roll": True,
                                                                             "drops_apart": True}),
    "below_absent": (1, {"use_tier_below": True}, {}),
    "long_order": (1, {"use_tier_below": True, "linear_order": 40}, {"below": True}),
}


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("path", list(PATHS))
def test_streaming_equals_forward_with_predictor(path, adaptive, dtype=torch.float32, tol=1e-4):
    index, over, use = PATHS[path]
    st = make_stage(index=index, adaptive_scale=adaptive, dtype=dtype, **over)
    assert st.linear.adaptive == adaptive
    t_len = max(2 * st.receptive_field, 3 * st.history_receptive_field // 2, 2 * st.linear.order,
                (2 * ADAPT_TAPS + 7) * adaptive) + 13
    d = inputs(st, t_len)
    if "end_class" in over:
        d["x"][0, -3:] = st.end_code
    kw = {k: d[k] for k in ("genre", "below", "roll") if use.get(k)}
    if use.get("drops"):
        kw.update(drop_below=torch.tensor([True, False]), drop_roll=torch.tensor([False, True]))
    if use.get("drops_apart"):  # network and linear path dropped in different rows
        kw.update(drop_below=torch.tensor([True, False]), drop_below_linear=torch.tensor([False, True]))
    with torch.no_grad():
        ref = st(d["x"], **kw)
    assert ref.shape == (2, st.head.channels, t_len) and torch.isfinite(ref).all()
    chunk = 24
    with st.streaming(batch=2, chunk=chunk, **kw) as s:
        prev = torch.full((2,), st.start_code, dtype=torch.long)
        outs = []
        for t in range(t_len):
            outs.append(s.step(prev))
            prev = d["x"][:, t]
        if st.conditioning is not None:
            assert s.chunk < t_len  # more than one chunk
    out = torch.stack(outs, dim=-1)
    assert out.shape == ref.shape
    err = (out - ref).abs()
    if adaptive:
        # s(t) can be as small as the floor (1e-3; t = 0 has no residual yet), so far bins get logits
        # of -1e3 and more, where float32 itself resolves only ~1e-4: there the bound is relative
        err = err / ref.abs().clamp(min=1.0)
    assert err.max().item() <= tol


@pytest.mark.parametrize("path", ["past_end_roll", "below_all", "below_dropped", "below_dropped_apart"])
def test_streaming_equals_forward_adaptive_float64(path):
    """The adaptive scale's ring (|r(t-1)| pushed at step t, > L steps, several chunks) is exact:
    float64 removes the rounding that the float32 test has to allow for sharp scales."""
    test_streaming_equals_forward_with_predictor(path, True, dtype=torch.float64, tol=1e-9)


# ----------------------------------------------------------------------------- causality, lookahead


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("index", [0, 1])
def test_causality_with_predictor(index, adaptive):
    st = make_stage(index=index, use_tier_below=True, history={"enabled": True}, adaptive_scale=adaptive, **WIDE)
    d = inputs(st, 160)
    with torch.no_grad():
        ref = st(d["x"], below=d["below"])
        for t in (0, 3, 4, 37, 100, 159):
            x2 = d["x"].clone()
            x2[:, t] = (x2[:, t] + 7) % CLASSES
            out = st(x2, below=d["below"])
            assert torch.equal(out[:, :, : t + 1], ref[:, :, : t + 1]), f"x[{t}] leaked into out[<={t}]"
            if t + 1 < 160:
                assert not torch.equal(out[:, :, t + 1], ref[:, :, t + 1])


def test_linear_past_reach_is_order():
    """With the network's mu_nn / log_s rows made constant, x[s] reaches exactly out[s+1 .. s+P]
    through the linear path alone (the main stack is cut by zeroing its skip paths)."""
    st = make_stage(index=0, linear_order=ORDER, **WIDE)
    with torch.no_grad():
        for sk in st.skip:
            sk.weight.zero_()
    x = inputs(st, 80)["x"]
    s = 30
    x2 = x.clone()
    x2[:, s] = (x2[:, s] + 5) % CLASSES
    with torch.no_grad():
        changed = changed_positions(st(x), st(x2))
    assert changed.min().item() == s + 1 and changed.max().item() == s + ORDER


@pytest.mark.parametrize("linear_below", [1, 3, 6])
def test_lookahead_unchanged_and_linear_below_reach(linear_below):
    la = 3
    st = make_stage(index=1, use_tier_below=True, conditioning={"lookahead": la}, linear_below=linear_below,
                    **WIDE)
    assert st.lookahead == (la + 1) * FACTOR - 1  # as without the linear path
    ahead = min(linear_below, la)
    d = inputs(st, 200)
    with torch.no_grad():
        ref = st(d["x"], below=d["below"])
        for j in (0, 10, 25, 49):
            b2 = d["below"].clone()
            b2[:, j] = (b2[:, j] + 3) % CLASSES
            changed = changed_positions(st(d["x"], below=b2), ref)
            first = changed.min().item()
            assert first == max(0, (j - la) * FACTOR)  # the stage's lookahead, by perturbation
            if j >= la:
                assert (j + 1) * FACTOR - 1 - first == st.lookahead
        # the linear path alone (conditioning cut off from the gates): below[j] reaches
        # t in [(j - ahead) f, (j + back + 1) f)
        st.cond_proj.zero_()
        ref = st(d["x"], below=d["below"])
        for j in (10, 25):
            b2 = d["below"].clone()
            b2[:, j] = (b2[:, j] + 3) % CLASSES
            changed = changed_positions(st(d["x"], below=b2), ref)
            assert changed.min().item() == (j - ahead) * FACTOR
            assert changed.max().item() == (j + linear_below + 1) * FACTOR - 1
            assert len(changed) == (ahead + linear_below + 1) * FACTOR


def test_dropped_below_uses_the_fallback_taps():
    """A dropped (or absent) tier below: the linear path is the fallback own-past predictor, not the
    joint taps with a zero (silent) below term; drop_below_linear drops the two parts apart."""
    st = make_stage(index=1, use_tier_below=True)
    lin = st.linear
    assert not torch.equal(lin.fallback_weight, lin.past_weight)  # randomised apart
    d = inputs(st, 64)
    on, off = torch.tensor([True, True]), torch.tensor([False, False])
    with torch.no_grad():
        none = st(d["x"], below=None)
        dropped = st(d["x"], below=d["below"], drop_below=on)
        mixed = st(d["x"], below=d["below"], drop_below=torch.tensor([True, False]))
        full = st(d["x"], below=d["below"])
        net_only = st(d["x"], below=d["below"], drop_below=on, drop_below_linear=off)
        lin_only = st(d["x"], below=d["below"], drop_below=off, drop_below_linear=on)
        # the same stage with the fallback as its only own-past taps and no below taps
        joint = (lin.past_weight.clone(), lin.below_weight.clone())
        lin.past_weight.copy_(lin.fallback_weight)
        lin.below_weight.zero_()
        own_only = st(d["x"], below=d["below"], drop_below=on, drop_below_linear=off)
        own_only_full = st(d["x"], below=d["below"])
        lin.past_weight.copy_(joint[0])
        lin.below_weight.copy_(joint[1])
        lin.below_weight.zero_()
        zero_fill = st(d["x"], below=d["below"], drop_below=on, drop_below_linear=off)  # the old behaviour
    torch.testing.assert_close(none, dropped, rtol=0, atol=1e-5)
    torch.testing.assert_close(dropped, own_only, rtol=0, atol=1e-5)
    assert (dropped - zero_fill).abs().max() > 1e-2
    torch.testing.assert_close(mixed[0], dropped[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], full[1], rtol=0, atol=1e-5)
    # apart: the network without the tier below, the linear path with it, and the reverse
    assert (net_only - full).abs().max() > 1e-2 and (net_only - dropped).abs().max() > 1e-2
    torch.testing.assert_close(lin_only, own_only_full, rtol=0, atol=1e-5)


def harmonic(seconds: float, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """float32: three harmonic tones (7 partials each, random f0 and phases) + a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    y = 0.01 * rng.normal(size=len(t))
    for _ in range(3):
        f0 = rng.uniform(110, 440)
        for h in range(1, 8):
            y += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    return (0.6 * y / np.abs(y).max()).astype(np.float32)


def test_fallback_beats_zero_fill_on_harmonic_audio():
    """Tier below dropped, network zeroed: the least-squares fallback (own past only) scores clearly
    better than the joint taps with a silent tier below (measured: 5.7 vs 8.9 bits/sample)."""
    from pipeline.corpus.audio import make_tiers

    rng = np.random.default_rng(0)
    tiers = [make_tiers(harmonic(1.0, rng), [2000, 8000, 16000]) for _ in range(3)]
    cfg = lin_cfg(rate=8000, use_tier_below=True, linear_order=32, linear_below=8, adaptive_scale=True,
                  conditioning={"lookahead": 8})
    st = Stage(cfg, index=1, n_genres=GENRES, factor=FACTOR, roll_fps=FPS, classes=256).eval()
    fit = lstsq_init(st, [t[8000] for t in tiers[:2]], [t[2000] for t in tiers[:2]], max_rows=30000)
    assert fit["rmse"] < fit["fallback_rmse"]  # the tier below helps, the fallback does without it
    np.testing.assert_allclose(st.linear.fallback_weight.detach().numpy(), fit["fallback"], rtol=1e-6)
    x = torch.as_tensor(tiers[2][8000].astype(np.int64))[None]
    below = torch.as_tensor(tiers[2][2000].astype(np.int64))[None]
    drop = torch.tensor([True])
    with torch.no_grad():
        st.out2.weight.zero_()
        st.out2.bias.zero_()
        st.lin_out.weight.zero_()

        def bits(**kw) -> float:
            return st.head.nll_bits(st(x, below=below, **kw), x).mean().item()

        full, fallback = bits(), bits(drop_below=drop)
        st.linear.fallback_weight.copy_(st.linear.past_weight)  # zero-fill: joint own-past taps alone
        zero_fill = bits(drop_below=drop)
    assert full < fallback < zero_fill - 2.0, (full, fallback, zero_fill)


# ----------------------------------------------------------------------------- the distribution


def logistic_bin_probs_reference(mu: float, s: float, classes: int) -> np.ndarray:
    """float64 discretized logistic over the mu-law bins (outer edges at +-inf), mixed with a
    UNIFORM_MIX share of the uniform distribution; the edges rounded to float32 as the stage's
    tables are."""
    from models.predictor import UNIFORM_MIX

    return (1 - UNIFORM_MIX) * _logistic_bins(mu, s, classes) + UNIFORM_MIX / classes


def _logistic_bins(mu: float, s: float, classes: int) -> np.ndarray:
    v = mulaw_values(classes)
    mid = ((v[1:] + v[:-1]) / 2).astype(np.float32).astype(np.float64)
    edges = np.concatenate([[-np.inf], mid, [np.inf]])

    def cdf(e):
        return 1.0 / (1.0 + np.exp(-(e - mu) / s))

    with np.errstate(over="ignore"):
        return cdf(edges[1:]) - cdf(edges[:-1])


@pytest.mark.parametrize("classes", [32, 256])
def test_zeroed_network_gives_discretized_logistic(classes):
    st = make_stage(index=0, classes=classes, dtype=torch.float64, end_class=True)
    past = torch.tensor([1.5, -0.6, 0.0, 0.0, 0.0, 0.1], dtype=torch.float64)
    with torch.no_grad():
        st.out2.weight.zero_()
        st.out2.bias.zero_()
        st.lin_out.weight.zero_()
    v = mulaw_values(classes).astype(np.float32).astype(np.float64)  # the stage's float32 table
    x = torch.randint(classes // 4, 3 * classes // 4, (2, 60), generator=torch.Generator().manual_seed(3))
    y = v[x.numpy()]
    for scale, bias in ((0.05, 0.0), (0.01, 0.02), (1e-4, 0.0), (0.5, -0.1)):
        st.set_linear_predictor(past, None, bias=bias, scale=scale)
        with torch.no_grad():
            out = st(x)  # (B, C+1, T)
        logp = torch.log_softmax(out, 1)
        # already normalised: the combined logits are log-probabilities (end class: logit 0 -> mass 1/Z)
        p = out[:, :classes].exp()
        assert torch.allclose(p.sum(1), torch.ones(()).double(), atol=1e-9)
        for t in (0, 1, 7, 40, 59):
            y_pad = np.concatenate([np.zeros(ORDER), y[0]])
            mu = bias + sum(past[i].item() * y_pad[ORDER + t - 1 - i] for i in range(ORDER))
            ref = logistic_bin_probs_reference(mu, scale, classes)
            got = p[0, :, t].numpy()
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)
            mean = float((got * v).sum())
            if scale <= 0.05 and abs(mu) < 0.9:
                width = np.diff(v).max()
                assert abs(mean - mu) < max(2 * width, 0.05 * scale + 1e-3)
            # end class: nn logit 0 - log(classes) -> the renormalised softmax keeps the bins' shape
            assert out[0, classes, t].item() == pytest.approx(-math.log(classes))
            torch.testing.assert_close(logp[0, :classes, t].exp() * (1 + 1 / classes), p[0, :, t])


def adaptive_scale_reference(y: np.ndarray, mu_lin: np.ndarray) -> np.ndarray:
    """float64 s_adapt(t) = floor + sum_{i=1..L} w_i |y[t-i] - mu_lin[t-i]| (zeros before 0), by loops."""
    w = np.array([(1 - ADAPT_DECAY) * ADAPT_DECAY ** (i - 1) / (1 - ADAPT_DECAY**ADAPT_TAPS)
                  for i in range(1, ADAPT_TAPS + 1)])
    r = np.abs(y - mu_lin)
    out = np.full(len(y), ADAPT_FLOOR)
    for t in range(len(y)):
        for i in range(1, ADAPT_TAPS + 1):
            if t - i >= 0:
                out[t] += w[i - 1] * r[t - i]
    return out


def test_zeroed_network_gives_adaptive_scale_reference():
    """Network weights zeroed: P(bin) is the discretized logistic(mu_lin, s_adapt * exp(b)) with
    s_adapt from a numpy reference of the formula (residuals of taps + mu bias; end code -> 0)."""
    classes = 64
    st = make_stage(index=0, classes=classes, dtype=torch.float64, end_class=True, adaptive_scale=True)
    past = torch.tensor([1.2, -0.5, 0.0, 0.2, 0.0, -0.05], dtype=torch.float64)
    bias, mult = 0.01, 0.7
    with torch.no_grad():
        st.out2.weight.zero_()
        st.out2.bias.zero_()
        st.lin_out.weight.zero_()
    st.set_linear_predictor(past, None, bias=bias, scale=mult)
    v = np.concatenate([mulaw_values(classes).astype(np.float32).astype(np.float64), [0.0]])
    t_len = 3 * ADAPT_TAPS
    x = torch.randint(0, classes, (1, t_len), generator=torch.Generator().manual_seed(5))
    x[0, 50:53] = st.end_code  # decodes to 0 in the residuals
    y = v[x[0].numpy()]
    y_pad = np.concatenate([np.zeros(ORDER), y])
    mu = bias + np.array([sum(past[i].item() * y_pad[ORDER + t - 1 - i] for i in range(ORDER)) for t in range(t_len)])
    s_ref = adaptive_scale_reference(y, mu) * mult
    with torch.no_grad():
        out = st(x)
    p = out[0, :classes].exp().numpy()  # (C, T)
    for t in (0, 1, 2, 30, 51, 53, 54, ADAPT_TAPS, ADAPT_TAPS + 1, t_len - 1):
        ref = logistic_bin_probs_reference(mu[t], s_ref[t], classes)
        np.testing.assert_allclose(p[:, t], ref, rtol=1e-6, atol=1e-12, err_msg=f"t={t}")
    # the same s_adapt from the LinearPath helper
    r_abs = torch.as_tensor(np.abs(y - mu))[None]
    np.testing.assert_allclose(st.linear.adapt_scale(r_abs)[0].numpy(), s_ref / mult, rtol=1e-6, atol=0)


def test_bin_log_probs_are_finite_with_finite_gradients():
    lin = LinearPath(CLASSES, False, 4).double()
    mu = torch.tensor([-5.0, -1.0, -0.3, 0.0, 1e-6, 0.7, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    for log_s in (-20.0, math.log(1e-4), -3.0, 0.0, 5.0, 50.0):
        ls = torch.full_like(mu, log_s, requires_grad=True)
        lp = lin.bin_log_probs(mu, ls)
        assert torch.isfinite(lp).all()
        assert torch.allclose(torch.logsumexp(lp, -1), torch.zeros(()).double(), atol=1e-9)
        (lp * torch.randn_like(lp)).sum().backward()
        assert torch.isfinite(mu.grad).all() and torch.isfinite(ls.grad).all()
        mu.grad = None


# ----------------------------------------------------------------------------- least squares


def test_lstsq_init_recovers_ar2():
    from pipeline.corpus.audio import mulaw_encode

    rng = np.random.default_rng(0)
    a1, a2 = 1.6, -0.8
    tracks = []
    for _ in range(3):
        n = 20000
        e = rng.normal(0, 0.02, n)
        y = np.zeros(n)
        for t in range(2, n):
            y[t] = a1 * y[t - 1] + a2 * y[t - 2] + e[t]
        y = np.clip(y, -1, 1)
        tracks.append(mulaw_encode(y.astype(np.float32), 8).astype(np.int64))
    st = make_stage(index=0, classes=256, randomize=False, linear_order=8)
    fit = lstsq_init(st, tracks, None, max_rows=30000, seed=0)
    past = st.linear.past_weight.detach().numpy()
    assert abs(past[0] - a1) < 0.05 and abs(past[1] - a2) < 0.05, past
    assert np.abs(past[2:]).max() < 0.05
    assert abs(st.lin_out.bias[0].item()) < 0.01 and fit["rows"] == 30000
    assert st.lin_out.bias[1].item() == pytest.approx(math.log(fit["scale"]))
    np.testing.assert_allclose(past, fit["past"], rtol=1e-6)
    # the stage's forward now predicts like the fit: distribution mean near the AR prediction
    x = torch.as_tensor(tracks[0][:400])[None]
    with torch.no_grad():
        st.out2.weight.zero_()
        st.out2.bias.zero_()
        p = torch.softmax(st(x).double(), 1)[0]  # (C, T)
    v = mulaw_values(256)
    yv = v[tracks[0][:400]]
    pred = a1 * yv[1:-1] + a2 * yv[:-2]  # for t = 2..399
    mean = (p.numpy() * v[:, None]).sum(0)[2:]
    assert np.abs(mean - pred).mean() < 0.01


def test_lstsq_init_input_noise_trades_fit_for_noise_gain():
    """Taps fitted as if their past carried noise amplify a noisy past less (the stage's own draws in
    sampling), at some cost in fit; none leaves the plain least-squares taps."""
    from pipeline.corpus.audio import mulaw_encode

    rng = np.random.default_rng(3)
    n = 20000
    y = np.zeros(n)
    e = rng.normal(0, 0.01, n)
    for t in range(2, n):  # a sharp resonance: taps with a large noise gain
        y[t] = 1.9 * y[t - 1] - 0.95 * y[t - 2] + e[t]
    track = mulaw_encode(np.clip(y / (4 * np.abs(y).max()), -1, 1).astype(np.float32), 8).astype(np.int64)
    fits = [lstsq_init(make_stage(index=0, classes=256, randomize=False, linear_order=8), [track], None,
                       max_rows=15000, seed=0, input_noise=rho) for rho in (0.0, 1.0, 3.0)]
    gains = [f["noise_gain"] for f in fits]
    rmses = [f["rmse"] for f in fits]
    assert gains[0] > 2.0 and gains[0] > gains[1] > gains[2] >= 1.0, gains
    assert rmses[0] < rmses[1] < rmses[2], rmses
    plain = make_stage(index=0, classes=256, randomize=False, linear_order=8)
    np.testing.assert_allclose(lstsq_init(plain, [track], None, max_rows=15000, seed=0)["past"], fits[0]["past"],
                               rtol=1e-9)
    assert gains[0] == pytest.approx(math.sqrt(1 + np.sum(fits[0]["past"] ** 2)))


def test_lstsq_init_recovers_below_interpolation():
    """x[t] = dec(below[t // f + shift_p]) per phase: the fit puts weight 1 on the right tap."""
    rng = np.random.default_rng(1)
    st = make_stage(index=1, classes=CLASSES, randomize=False, use_tier_below=True, linear_below=2,
                    conditioning={"lookahead": 2})
    lin = st.linear
    v = mulaw_values(CLASSES)
    xs, bs = [], []
    for _ in range(2):
        below = rng.integers(0, CLASSES, 3000)
        t = np.arange(3000 * FACTOR)
        off = np.array([-1, 0, 1, 2])[t % FACTOR]  # phase p reads below[t//f + off[p]]
        idx = t // FACTOR + off
        src = np.where((idx >= 0) & (idx < len(below)), v[below[np.clip(idx, 0, len(below) - 1)]], 0.0)
        xs.append(np.abs(v[None, :] - src[:, None]).argmin(1))  # exact codes
        bs.append(below)
    lstsq_init(st, xs, bs, max_rows=20000)
    w = lin.below_weight.detach().numpy()
    expect = np.zeros((FACTOR, lin.window))
    for p, o in enumerate([-1, 0, 1, 2]):
        expect[p, lin.back + o] = 1.0
    np.testing.assert_allclose(w, expect, atol=1e-6)
    assert np.abs(lin.past_weight.detach().numpy()).max() < 1e-6
    with pytest.raises(ValueError):
        lstsq_init(make_stage(index=1, linear_order=0), xs, bs)


def test_lstsq_init_adaptive_sets_multiplier():
    rng = np.random.default_rng(2)
    tracks = [rng.integers(10, 22, 3000) for _ in range(2)]
    st = make_stage(index=0, randomize=False, adaptive_scale=True)
    assert st.lin_out.bias[1].item() == pytest.approx(LOG_S_ADAPT_INIT)  # the init, before any fit
    with torch.no_grad():
        st.lin_out.bias[1] = 0.3
    fit = lstsq_init(st, tracks, None, max_rows=4000)
    assert st.lin_out.bias[1].item() == pytest.approx(LOG_S_ADAPT_INIT, abs=1e-6)
    assert fit["scale"] == pytest.approx(1.0 / (2.0 * math.log(2.0)))
    off = make_stage(index=0, randomize=False, adaptive_scale=False)
    fit = lstsq_init(off, tracks, None, max_rows=4000)
    assert off.lin_out.bias[1].item() == pytest.approx(math.log(fit["scale"]))
    assert fit["scale"] != pytest.approx(1.0 / (2.0 * math.log(2.0)))


# ----------------------------------------------------------------------------- checkpoints, cost, gradients


@pytest.mark.parametrize("adaptive", [False, True])
def test_checkpoint_round_trip_is_bitwise_with_predictor(tmp_path, adaptive):
    st = make_stage(index=1, use_genre=True, use_tier_below=True, use_roll=True, end_class=True,
                    adaptive_scale=adaptive)
    save_stage(st, tmp_path / "s1", extra={"genres": ["a", "b", "c"]})
    back = load_stage(tmp_path / "s1")
    assert back.config == st.config and back.linear is not None
    assert torch.equal(back.linear.past_weight, st.linear.past_weight)
    assert torch.equal(back.linear.below_weight, st.linear.below_weight)
    d = inputs(st, 100)
    with torch.no_grad():
        a = st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"])
        b = back(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"])
    assert torch.equal(a, b)
    meta = json.loads((tmp_path / "s1" / "model.json").read_text())
    assert meta["config"]["linear_order"] == ORDER and meta["config"]["linear_below"] == 3
    assert meta["config"]["adaptive_scale"] is adaptive and back.linear.adaptive == adaptive


def test_model_file_without_fallback_taps_loads_with_joint_taps(tmp_path):
    """A model.safetensors written before the fallback taps existed: they start as the joint own-past
    taps (the old behaviour: a dropped tier below adds nothing to mu)."""
    from safetensors.torch import load_file, save_file

    st = make_stage(index=1, use_tier_below=True)
    save_stage(st, tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    state = load_file(weights)
    del state["linear.fallback_weight"]
    save_file(state, weights)
    back = load_stage(tmp_path / "old")
    assert torch.equal(back.linear.fallback_weight, st.linear.past_weight)
    d = inputs(st, 64)
    drop = torch.tensor([True, False])
    with torch.no_grad():
        st.linear.fallback_weight.copy_(st.linear.past_weight)
        a, b = (m(d["x"], below=d["below"], drop_below=drop) for m in (back, st))
    assert torch.equal(a, b)


def test_model_json_without_adaptive_key_rebuilds_constant_scale(tmp_path):
    st = make_stage(index=1, use_tier_below=True, adaptive_scale=False)
    save_stage(st, tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["adaptive_scale"]  # as written before the key existed
    meta_path.write_text(json.dumps(meta))
    back = load_stage(tmp_path / "old")
    assert back.linear is not None and not back.linear.adaptive and back.config["adaptive_scale"] is False
    d = inputs(st, 100)
    with torch.no_grad():
        assert torch.equal(st(d["x"], below=d["below"]), back(d["x"], below=d["below"]))
    # new dataclass configs: on
    from pipeline.config import StageConfig

    assert Stage(StageConfig(rate=2000), 0, 2, 1, 100).linear.adaptive


def test_old_model_json_without_keys_rebuilds_without_predictor(tmp_path):
    st = make_stage(index=1, use_tier_below=True, linear_order=0)
    save_stage(st, tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["linear_order"], meta["config"]["linear_below"]  # as written before the keys existed
    meta_path.write_text(json.dumps(meta))
    back = load_stage(tmp_path / "old")  # strict load: same parameters
    assert back.linear is None
    d = inputs(st, 64)
    with torch.no_grad():
        assert torch.equal(st(d["x"], below=d["below"]), back(d["x"], below=d["below"]))


def test_flops_include_linear_path():
    on = make_stage(index=1, use_tier_below=True)
    off = make_stage(index=1, use_tier_below=True, linear_order=0)
    extra = ORDER + on.linear.window + 6 * CLASSES + 2 * on.skip_channels  # taps + bins + 2 output rows
    assert on.flops_per_sample() - off.flops_per_sample() == pytest.approx(2.0 * extra)
    ad = make_stage(index=1, use_tier_below=True, adaptive_scale=True)
    assert ad.flops_per_sample() - on.flops_per_sample() == pytest.approx(2.0 * (ADAPT_TAPS + 2))


def test_backward_reaches_every_parameter_with_predictor():
    st = make_stage(index=1, use_genre=True, use_tier_below=True, use_roll=True, history={"enabled": True},
                    end_class=True)
    st.train()
    d = inputs(st, 64)
    out = st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"],
             drop_below=torch.tensor([True, False]), drop_roll=torch.tensor([False, True]),
             drop_history=torch.tensor([True, False]))
    st.head.nll_bits(out, d["x"]).mean().backward()
    missing = [n for n, p in st.named_parameters() if p.grad is None]
    assert not missing
    zero = [n for n, p in st.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero  # the fallback taps learn from the dropped row, the joint taps from the other
