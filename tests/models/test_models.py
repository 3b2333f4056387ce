"""models/: causality, receptive field and lookahead by perturbation, streaming == forward,
heads against float64 references, checkpoints, cascade summary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models import Cascade, CheckpointError, Stage, load_stage, load_state_dict, save_stage, save_state_dict
from models.config import stage_arch
from models.heads import PCM_BINS, CategoricalHead, LogisticMixtureHead
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
    shipped_linear,
    stage_cfg as small_cfg,
)

# the structural tests run as configured here (linear path off) and with the shipped settings
# (linear path and adaptive scale on, as configs/tiny.yaml)
SHIPPED = pytest.mark.parametrize("shipped", [False, True], ids=["linear_off", "shipped"])


def make_stage(index=1, seed=0, dtype=torch.float32, shipped=False, **over) -> Stage:
    torch.manual_seed(seed)
    cfg = small_cfg(**{**shipped_linear(), **over}) if shipped else small_cfg(**over)
    st = Stage(cfg, index=index, n_genres=GENRES, factor=FACTOR if index else 1, roll_fps=FPS, classes=CLASSES)
    randomize_biases(st)
    return st.to(dtype).eval()


def own_reach(st: Stage, history: bool = True) -> int:
    """Samples of own past that affect an output: main stack, history stack, linear path."""
    return max(st.receptive_field, st.history_receptive_field * history, st.linear_receptive_field)


# ----------------------------------------------------------------------------- config


def test_arch_config_owns_the_architecture_and_migrates_old_files():
    from models.config import ABSENT_MEANS, StageArchConfig
    from pipeline.config import StageConfig

    # pipeline's StageConfig adds training knobs to the one architecture config (no second copy)
    assert issubclass(StageConfig, StageArchConfig)
    assert StageConfig(rate=2000).arch() == StageArchConfig(rate=2000) == stage_arch(StageConfig(rate=2000))
    arch = {f.name for f in dataclasses.fields(StageArchConfig)}
    assert not arch & {"crop", "batch_size", "max_steps", "time_share", "genre_dropout", "below_dropout"}
    # keys added later mean "off" when a config (an old model.json) lacks them; training keys are ignored
    old = stage_arch({"rate": 2000, "crop": 123, "history": {"pool": 5}})
    assert {k: getattr(old, k) for k in ABSENT_MEANS} == ABSENT_MEANS
    assert old.history == dataclasses.replace(StageArchConfig().history, pool=5)
    assert dataclasses.replace(old, **{k: getattr(StageArchConfig(), k) for k in ABSENT_MEANS}) == StageArchConfig(
        rate=2000, history=old.history)
    assert stage_arch(old.to_dict()) == old  # model.json round trip
    with pytest.raises(ValueError, match="unknown head"):
        StageArchConfig(head="nope").check()


# ----------------------------------------------------------------------------- causality


@SHIPPED
@pytest.mark.parametrize("head", ["categorical", "logistic_mixture"])
def test_causality_main_and_history(head, shipped):
    st = make_stage(index=1, head=head, mixtures=3, use_genre=True, use_roll=True, use_tier_below=True,
                    history={"enabled": True}, shipped=shipped)
    assert (st.linear is not None) == (shipped and head == "categorical")
    d = inputs(st, 160)
    with torch.no_grad():
        ref = st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"])
        for t in (0, 3, 4, 37, 100, 159):
            x2 = d["x"].clone()
            x2[:, t] = (x2[:, t] + 7) % CLASSES if head == "categorical" else -x2[:, t]
            out = st(x2, genre=d["genre"], below=d["below"], roll=d["roll"])
            assert torch.equal(out[:, :, : t + 1], ref[:, :, : t + 1]), f"x[{t}] leaked into out[<={t}]"
            if t + 1 < 160:
                assert not torch.equal(out[:, :, t + 1], ref[:, :, t + 1])


def test_history_stack_alone_is_strictly_causal():
    st = make_stage(index=0, history={"enabled": True, "pool": 5})
    x = inputs(st, 120)["x"]
    e = st.embed_input(x)
    with torch.no_grad():
        u = st.history(e)  # (B, H, M): frame m is used for samples [5m, 5m+5)
        for s in (0, 4, 5, 33, 99):
            x2 = x.clone()
            x2[:, s] = (x2[:, s] + 1) % CLASSES
            u2 = st.history(st.embed_input(x2))
            changed = ((u2 - u).abs().amax(dim=(0, 1)) > 0).nonzero()[:, 0]
            assert len(changed) and changed.min().item() * 5 > s  # only frames starting after s


# ----------------------------------------------------------------------------- receptive field, lookahead


@SHIPPED
@pytest.mark.parametrize("kernel", [2, 3])
def test_receptive_field_by_perturbation(kernel, shipped):
    st = make_stage(index=0, kernel_size=kernel, cycle_length=3, shipped=shipped, **WIDE)
    assert st.receptive_field == 1 + 2 * (kernel - 1) * (1 + 2 + 4)
    # shipped: the linear taps (32) and the adaptive-scale window (64) reach further than the stack
    assert st.linear_receptive_field == (32 + 64 if shipped else 0)
    s = st.receptive_field + 3
    x = inputs(st, s + 2 * own_reach(st) + 10)["x"]
    x2 = x.clone()
    x2[:, s] = (x2[:, s] + 5) % CLASSES
    with torch.no_grad():
        changed = changed_positions(st(x), st(x2))
    assert changed.min().item() == s + 1
    assert changed.max().item() - s == own_reach(st)


@SHIPPED
def test_history_receptive_field_by_perturbation(shipped):
    st = make_stage(index=0, history={"enabled": True, "pool": 4, "layers": 3}, shipped=shipped, **WIDE)
    assert st.history.receptive_field == 8  # frames: 1 + 1 + 2 + 4
    rf = st.history_receptive_field
    assert rf == 9 * 4 - 1 + st.receptive_field - 2
    x = inputs(st, 3 * own_reach(st))["x"]
    reach = 0
    for s in (40, 41, 43):  # a frame start gives the longest reach
        x2 = x.clone()
        x2[:, s] = (x2[:, s] + 5) % CLASSES
        with torch.no_grad():
            changed = changed_positions(st(x), st(x2))
        reach = max(reach, changed.max().item() - s)
    assert reach == own_reach(st)
    # without the history stack the reach is the main receptive field (or the linear path's)
    with torch.no_grad():
        changed = changed_positions(st(x, drop_history=torch.ones(2, dtype=torch.bool)),
                                    st(x2, drop_history=torch.ones(2, dtype=torch.bool)))
    assert changed.max().item() - 43 == own_reach(st, history=False)


@SHIPPED
def test_lookahead_tier_below_by_perturbation(shipped):
    st = make_stage(index=1, use_tier_below=True, conditioning={"lookahead": 3}, shipped=shipped, **WIDE)
    assert st.lookahead == (3 + 1) * FACTOR - 1
    d = inputs(st, 200)
    with torch.no_grad():
        ref = st(d["x"], below=d["below"])
        for j in (0, 10, 25, 49):
            b2 = d["below"].clone()
            b2[:, j] = (b2[:, j] + 3) % CLASSES
            changed = changed_positions(st(d["x"], below=b2), ref)
            first = changed.min().item()
            assert first == max(0, (j - 3) * FACTOR)  # below[j] is seen from t = (j - lookahead) * f
            if j >= 3:
                assert (j + 1) * FACTOR - 1 - first == st.lookahead


@SHIPPED
def test_lookahead_roll_stage0_by_perturbation(shipped):
    st = make_stage(index=0, use_roll=True, conditioning={"lookahead": 2}, shipped=shipped, **WIDE)
    spf = RATE // FPS  # stage samples per roll frame
    assert st.conditioning.up == spf and st.lookahead == 3 * spf - 1
    d = inputs(st, 320)
    with torch.no_grad():
        ref = st(d["x"], roll=d["roll"])
        for f in (5, 20, 39):
            r2 = d["roll"].clone()
            r2[:, :, f] = 1.0 - r2[:, :, f]
            first = changed_positions(st(d["x"], roll=r2), ref).min().item()
            assert first == (f - 2) * spf and (f + 1) * spf - 1 - first == st.lookahead


def test_dropped_below_is_learned_not_zero_codes():
    st = make_stage(index=1, use_tier_below=True)
    d = inputs(st, 64)
    with torch.no_grad():
        none = st(d["x"], below=None)
        dropped = st(d["x"], below=d["below"], drop_below=torch.ones(2, dtype=torch.bool))
        silence = st(d["x"], below=torch.full_like(d["below"], CLASSES // 2))
        mixed = st(d["x"], below=d["below"], drop_below=torch.tensor([True, False]))
        full = st(d["x"], below=d["below"])
    torch.testing.assert_close(none, dropped, rtol=0, atol=1e-6)
    assert not torch.allclose(none, silence)
    torch.testing.assert_close(mixed[0], dropped[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], full[1], rtol=0, atol=1e-6)


@SHIPPED
def test_cond_len_reads_padding_as_missing(shipped):
    """Per-row ``cond_len``: below / roll past it are read as missing, exactly as if they ended there
    (a training crop at a track's end, padded to the batch's length)."""
    st = make_stage(index=1, use_genre=True, use_tier_below=True, use_roll=True, history={"enabled": True},
                    shipped=shipped)
    d = inputs(st, 96)  # below (2, 24), roll (2, 256, 12); RATE / FPS = 8 samples per frame
    cut = [96, 56]  # row 0 complete, row 1's piece ends at sample 56
    kw = {"genre": d["genre"], "drop_below": torch.tensor([False, True]), "drop_roll": torch.tensor([True, False])}
    with torch.no_grad():
        out = st(d["x"], below=d["below"], roll=d["roll"], cond_len=torch.tensor(cut), **kw)
        for i, n in enumerate(cut):
            row = {k: v[i:i + 1] for k, v in kw.items()}
            ref = st(d["x"][i:i + 1], below=d["below"][i:i + 1, : n // FACTOR],
                     roll=d["roll"][i:i + 1, :, : n * FPS // RATE], **row)
            torch.testing.assert_close(out[i], ref[0], rtol=1e-5, atol=1e-5)
        padded = st(d["x"], below=d["below"], roll=d["roll"], **kw)
    torch.testing.assert_close(out[0], padded[0], rtol=1e-5, atol=1e-5)
    assert (out[1] - padded[1]).abs().max() > 1e-3  # without cond_len the padding reads as real


# ----------------------------------------------------------------------------- streaming == forward

PATHS = {
    "none": ({}, {}),
    "genre": ({"use_genre": True}, {"genre": True}),
    "below": ({"use_tier_below": True}, {"below": True}),
    "roll": ({"use_roll": True}, {"roll": True}),
    "history": ({"history": {"enabled": True}}, {}),
    "all": ({"use_genre": True, "use_tier_below": True, "use_roll": True, "history": {"enabled": True}},
            {"genre": True, "below": True, "roll": True}),
    "dropped": ({"use_genre": True, "use_tier_below": True, "use_roll": True, "history": {"enabled": True}},
                {"genre": True, "below": True, "roll": True, "drops": True}),
    "dropped_apart": ({"use_tier_below": True, "use_roll": True}, {"below": True, "roll": True, "drops_apart": True}),
    "absent": ({"use_genre": True, "use_tier_below": True, "use_roll": True}, {}),
    "kernel3": ({"kernel_size": 3, "use_tier_below": True, "history": {"enabled": True, "kernel_size": 3}},
                {"below": True}),
    "mixture": ({"head": "logistic_mixture", "mixtures": 4, "use_genre": True, "use_tier_below": True,
                 "use_roll": True, "history": {"enabled": True}}, {"genre": True, "below": True, "roll": True}),
    "categorical_end": ({"end_class": True, "use_roll": True}, {"roll": True}),
    # score taps (models/score.py): stage 0 with a roll and the linear path only
    "score": ({"use_genre": True, "use_roll": True, "end_class": True, "history": {"enabled": True},
               "score": {"enabled": True}}, {"genre": True, "roll": True}),
    "score_dropped": ({"use_roll": True, "history": {"enabled": True}, "score": {"enabled": True}},
                      {"roll": True, "drops": True}),
    # stage 1: score taps on the linear part's residual, more taps than the linear order
    "score_residual": ({"use_genre": True, "use_tier_below": True, "use_roll": True, "history": {"enabled": True},
                        "score": {"enabled": True, "order": 24}}, {"genre": True, "below": True, "roll": True}),
    "score_residual_dropped": ({"use_tier_below": True, "use_roll": True, "score": {"enabled": True, "order": 24}},
                               {"below": True, "roll": True, "drops": True}),
    # a learned spectral envelope per genre on the taps' harmonics (the rows' genres differ)
    "score_timbre": ({"use_genre": True, "use_roll": True, "score": {"enabled": True, "timbre_knots": 4}},
                     {"genre": True, "roll": True}),
    # ... and a learned line width per genre (stage 0)
    "score_timbre_width": ({"use_genre": True, "use_roll": True,
                            "score": {"enabled": True, "timbre_knots": 4, "learned_bandwidth": True}},
                           {"genre": True, "roll": True}),
    "score_residual_timbre": ({"use_genre": True, "use_tier_below": True, "use_roll": True,
                               "score": {"enabled": True, "order": 24, "timbre_knots": 6}},
                              {"genre": True, "below": True, "roll": True, "drops": True}),
    # taps cross-faded where the notes change (the roll changes every few frames here)
    "score_residual_crossfade": ({"use_genre": True, "use_tier_below": True, "use_roll": True,
                                  "score": {"enabled": True, "order": 24, "timbre_knots": 6, "crossfade_ms": 3.0}},
                                 {"genre": True, "below": True, "roll": True, "drops": True}),
}


def path_case(path: str, index: int, shipped: bool) -> tuple[Stage, dict, dict, int]:
    """Stage ``index`` built for conditioning path ``path`` (skipped where it does not apply), inputs
    over >= 2 receptive fields of every part (main stack, history, linear path), and the
    conditioning keywords: (stage, inputs, keywords, length).  Shared by the streaming engines' tests."""
    over, use = PATHS[path]
    if index == 0 and "use_tier_below" in over and path not in ("all", "dropped", "dropped_apart", "absent",
                                                                 "mixture"):
        pytest.skip("stage 0 has no tier below")
    if path.startswith("score_residual") and (not index or not shipped):
        pytest.skip("score taps on the residual: a stage with a tier below, with the linear path")
    elif path.startswith("score") and not path.startswith("score_residual") and (index or not shipped):
        pytest.skip("score taps: stage 0 (no tier below) with the linear path")
    st = make_stage(index=index, shipped=shipped, **over)
    t_len = max(2 * st.receptive_field, 3 * st.history_receptive_field // 2, 2 * st.linear_receptive_field) + 13
    d = inputs(st, t_len)
    kw = {k: d[k] for k in ("genre", "below", "roll") if use.get(k)}
    if use.get("drops"):
        kw.update(drop_below=torch.tensor([True, False]), drop_roll=torch.tensor([False, True]),
                  drop_history=torch.tensor([True, False]))
    if use.get("drops_apart"):  # the linear path's tier below dropped apart from the network's
        kw.update(drop_below=torch.tensor([True, False]), drop_below_linear=torch.tensor([False, True]))
    return st, d, kw, t_len


def assert_logits_close(out: torch.Tensor, ref: torch.Tensor, st: Stage, tol: float = 1e-4) -> None:
    """A streaming engine's logits (B, C, T) against the full pass's.  An adaptive scale can be as small
    as its floor: far bins get logits of -1e3 and more, where float32 resolves ~1e-4
    (see tests/models/test_models_predictor.py): a relative bound there."""
    assert out.shape == ref.shape
    err = (out - ref).abs()
    if st.linear is not None and st.linear.adaptive:
        err = err / ref.abs().clamp(min=1.0)
    assert err.max().item() <= tol


@SHIPPED
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("index", [0, 1])
def test_streaming_equals_forward(path, index, shipped):
    st, d, kw, t_len = path_case(path, index, shipped)
    with torch.no_grad():
        ref = st(d["x"], **kw)  # (B, C, T)
    chunk = 24  # several chunks, not a multiple of the upsampling factor for stage 0
    with st.streaming(batch=2, chunk=chunk, **kw) as s:
        prev = torch.full((2,), st.start_code, dtype=d["x"].dtype)
        outs = []
        for t in range(t_len):
            outs.append(s.step(prev))
            prev = d["x"][:, t]
        if st.conditioning is not None:
            assert s.chunk < t_len
    assert_logits_close(torch.stack(outs, dim=-1), ref, st)


def test_streaming_refuses_training_mode_and_resets():
    st = make_stage(index=1, use_tier_below=True)
    st.train()
    with pytest.raises(RuntimeError, match="training mode"):
        st.streaming(batch=1)
    st.eval()
    with st.streaming(batch=1) as s:
        a = st.step(torch.tensor([st.start_code]))  # the stage's own step delegates to the stream
        s.step(torch.tensor([3]))
    with pytest.raises(RuntimeError):
        s.step(torch.tensor([3]))
    with pytest.raises(RuntimeError):
        st.step(torch.tensor([3]))
    with st.streaming(batch=1) as s2:  # a new stream starts from scratch
        assert torch.equal(s2.step(torch.tensor([st.start_code])), a)


def test_streaming_memory_is_bounded_by_chunk():
    st = make_stage(index=1, use_tier_below=True, use_roll=True, history={"enabled": True})
    shapes = []
    for t_len in (400, 8000):
        d = inputs(st, t_len, b=1)
        with st.streaming(batch=1, below=d["below"], roll=d["roll"], chunk=64) as s:
            for t in range(70):
                s.step(torch.tensor([st.start_code]))
            shapes.append((tuple(s.cond_buf.shape), [tuple(ly.ring.shape) for ly in s.layers],
                           [tuple(q.shape) for q in s.hist_state]))
    assert shapes[0] == shapes[1]
    assert shapes[0][0] == (64, 1, 8)  # (chunk, B, channels)
    assert [r[0] for r in shapes[0][1]] == st.dilations  # ring of d*(k-1) slots per layer


# ----------------------------------------------------------------------------- heads


def mixture_nll_reference(out: np.ndarray, x: np.ndarray, m: int) -> np.ndarray:
    """float64 discretized logistic mixture NLL in bits; out (3M, N), x (N,)."""
    out = out.astype(np.float64)
    logits, means, log_s = out[:m], out[m:2 * m], np.maximum(out[2 * m:], -16.0)
    k = np.round((np.clip(x, -1, 1) + 1) * (PCM_BINS - 1) / 2)
    c = k * 2 / (PCM_BINS - 1) - 1
    half = 1 / (PCM_BINS - 1)

    def sig(v):
        return np.exp(-np.logaddexp(0.0, -v))

    a = (c - half - means) / np.exp(log_s)
    b = (c + half - means) / np.exp(log_s)
    # sigmoid(b) - sigmoid(a), taken on the side where both are small (no cancellation)
    p = np.where(a + b > 0, sig(-a) - sig(-b), sig(b) - sig(a))
    p = np.where(k == 0, sig(b), np.where(k == PCM_BINS - 1, sig(-a), p))
    w = np.exp(logits - logits.max(0))
    w /= w.sum(0)
    return -np.log2((w * p).sum(0))


def test_mixture_nll_matches_float64_reference():
    m, n = 5, 4000
    g = torch.Generator().manual_seed(0)
    out = torch.cat([torch.randn(m, n, generator=g), torch.rand(m, n, generator=g) * 1.8 - 0.9,
                     torch.rand(m, n, generator=g) * 6 - 9], 0)  # log scales in [-9, -3]
    comp = torch.randint(0, m, (n,), generator=g)
    x = out[m + comp, torch.arange(n)] + 0.01 * torch.randn(n, generator=g)  # near a mean
    x[:50] = -1.0
    x[50:100] = 1.0
    x[100:200] = torch.rand(100, generator=g) * 2 - 1  # anywhere
    head = LogisticMixtureHead(m)
    bits = head.nll_bits(out[None], x[None])[0].numpy()
    ref = mixture_nll_reference(out.numpy(), x.numpy(), m)
    finite = ref < 60  # beyond ~60 bits float64 differences of CDFs lose meaning
    assert finite.sum() > 0.9 * n
    np.testing.assert_allclose(bits[finite], ref[finite], rtol=1e-4, atol=2e-3)
    assert np.all(bits[~finite] > 40)


def test_mixture_sampling_matches_distribution():
    from scipy.stats import chi2

    m, n = 3, 40000
    out_t = torch.tensor([0.3, -0.5, 1.0, -0.6, 0.1, 0.95, -2.0, -1.5, -3.0])  # logits, means, log scales
    head = LogisticMixtureHead(m)
    gen = torch.Generator().manual_seed(1234)
    xs = head.sample(out_t.expand(n, -1), generator=gen).numpy()
    k = np.round((xs + 1) * (PCM_BINS - 1) / 2).astype(np.int64)
    assert np.abs(xs - (k * 2 / (PCM_BINS - 1) - 1)).max() < 1e-6  # on bin centres (half bin 1.5e-5)
    edges = np.arange(0, PCM_BINS + 1, 2048)  # 32 coarse bins
    counts = np.histogram(k, bins=edges)[0]
    # expected from the float64 CDF: coarse bin [k0, k1) covers [c(k0) - half, c(k1) - half)
    o = out_t.double().numpy()
    w = np.exp(o[:m]) / np.exp(o[:m]).sum()
    half = 1 / (PCM_BINS - 1)

    def cdf(v):
        return (w / (1 + np.exp(-(v - o[m:2 * m]) / np.exp(o[2 * m:])))).sum()

    cuts = [0.0] + [cdf(e * 2 / (PCM_BINS - 1) - 1 - half) for e in edges[1:-1]] + [1.0]
    expected = n * np.diff(cuts)
    keep = expected > 5
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stat < chi2.ppf(0.999, keep.sum() - 1), stat
    # temperature -> 0 collapses onto the component means
    cold = head.sample(out_t.expand(2000, -1), temperature=1e-4, generator=gen)
    assert torch.isin(torch.round(cold * 100), torch.round(torch.tensor([-0.6, 0.1, 0.95]) * 100)).all()


def test_categorical_sampling_temperature_top_p():
    head = CategoricalHead(10)
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(head.sample(logits, top_p=1e-6, generator=gen), logits.argmax(-1))
    assert torch.equal(head.sample(logits, temperature=1e-4, generator=gen), logits.argmax(-1))
    a = head.sample(logits, generator=torch.Generator().manual_seed(7))
    b = head.sample(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)  # seeded
    # top_p keeps the smallest set of classes whose mass reaches p
    one = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, -1)
    s = CategoricalHead(4).sample(one, top_p=0.75, generator=gen)
    assert set(s.tolist()) == {0, 1}
    assert abs((s == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    # frequencies follow softmax(logits / T)
    s = CategoricalHead(4).sample(one, temperature=2.0, generator=gen)
    p = torch.softmax(one[0] / 2.0, -1)
    freq = torch.bincount(s, minlength=4).float() / len(s)
    assert (freq - p).abs().max() < 0.03


def test_categorical_nll_bits_and_end_class():
    st = make_stage(index=0, end_class=True)
    assert st.end_code == CLASSES and st.head.channels == CLASSES + 1 and st.start_code == CLASSES // 2
    x = inputs(st, 50)["x"]
    x[:, -1] = st.end_code
    with torch.no_grad():
        out = st(x)
    bits = st.head.nll_bits(out, x)
    ref = -torch.log_softmax(out.double(), 1).gather(1, x[:, None])[:, 0] / math.log(2)
    torch.testing.assert_close(bits.double(), ref, rtol=1e-5, atol=1e-5)


@SHIPPED
def test_backward_reaches_every_parameter(shipped):
    """Every parameter gets a nonzero gradient: each conditioning path is on in one row and dropped
    in the other (the learned "dropped" / "cut" vectors and the fallback taps matter), and the
    biases are random (make_stage), so no zero-initialised vector hides a path."""
    st = make_stage(index=1, use_genre=True, use_tier_below=True, use_roll=True, history={"enabled": True},
                    shipped=shipped)
    st.train()
    d = inputs(st, 64)
    out = st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"],
             drop_below=torch.tensor([True, False]), drop_roll=torch.tensor([False, True]),
             drop_history=torch.tensor([True, False]))
    st.head.nll_bits(out, d["x"]).mean().backward()
    zero = [n for n, p in st.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not zero


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_bitwise(tmp_path):
    st = make_stage(index=1, use_genre=True, use_tier_below=True, use_roll=True, history={"enabled": True},
                    end_class=True)
    save_stage(st, tmp_path / "s1", extra={"genres": ["a", "b", "c"], "step": 5})
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["model.json", "model.safetensors"]
    back = load_stage(tmp_path / "s1")
    assert not back.training and back.config == st.config and back.end_code == st.end_code
    d = inputs(st, 100)
    with torch.no_grad():
        a = st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"])
        b = back(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"])
    assert torch.equal(a, b)
    import json

    meta = json.loads((tmp_path / "s1" / "model.json").read_text())
    assert meta["genres"] == ["a", "b", "c"] and meta["index"] == 1 and meta["factor"] == FACTOR
    assert meta["strata_version"] and meta["format_version"] == 1


def test_safetensors_header_starting_like_a_pickle_loads(tmp_path):
    """A safetensors header of 5248 bytes starts with 0x80, the pickle PROTO byte: still safetensors
    (a demo run's stage 2 was refused this way)."""
    import json
    import struct

    t = torch.arange(6, dtype=torch.float32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}).encode()
    header = header + b" " * (0x1480 - len(header))  # safetensors pads headers with spaces
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + t.numpy().tobytes())
    assert path.read_bytes()[:1] == b"\x80"
    assert torch.equal(load_state_dict(path)["w"], t)


def test_checkpoint_refuses_pickles(tmp_path):
    st = make_stage(index=0)
    folder = tmp_path / "s0"
    save_stage(st, folder)
    torch.save(st.state_dict(), folder / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(CheckpointError, match="model.safetensors.*pickle"):
        load_stage(folder)
    assert issubclass(CheckpointError, ValueError)
    only_pt = tmp_path / "pt"
    only_pt.mkdir()
    torch.save(st.state_dict(), only_pt / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt.*pickle"):
        load_stage(only_pt)
    (folder / "model.safetensors").write_bytes(b"garbage!")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_stage(folder)


def test_state_dict_helpers_round_trip(tmp_path):
    st = make_stage(index=0)
    path = save_state_dict(st.state_dict(), tmp_path / "ema.safetensors", metadata={"decay": 0.999})
    back = load_state_dict(path)
    assert set(back) == set(st.state_dict())
    assert all(torch.equal(back[k], v) for k, v in st.state_dict().items())
    torch.save(back, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        load_state_dict(tmp_path / "x.safetensors")


# ----------------------------------------------------------------------------- cascade


def test_cascade_from_tiny_config_summary():
    from pipeline.config import load_config

    cfg = load_config("tiny")
    cas = Cascade.from_config(cfg, n_genres=2)
    rows = cas.summary()
    assert [r["rate"] for r in rows] == list(cfg.data.rates)
    assert [cas[k].factor for k in range(3)] == [1, 4, 2]
    s0 = cas[0]
    assert rows[0]["receptive_field"] == s0.receptive_field == 511
    assert rows[0]["receptive_field_seconds"] == pytest.approx(511 / 2000)
    assert rows[1]["lookahead"] == (8 + 1) * 4 - 1
    assert rows[0]["history_receptive_field"] > 4 * s0.receptive_field
    # the history stack costs far less than the main stack per sample
    main_only = Stage({**s0.config, "history": {**s0.config["history"], "enabled": False}}, 0, 2, 1, 100)
    assert s0.flops_per_sample() - main_only.flops_per_sample() < 0.15 * main_only.flops_per_sample()
    for r in rows:
        assert r["params"] > 0 and r["flops_per_sample"] > 0
