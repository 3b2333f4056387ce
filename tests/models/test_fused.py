"""The fused engine (models/fused.py) computes the reference's function: teacher-forced logits
equal the full pass for every conditioning path, and seeded sampling gives the reference
engine's samples; where it cannot run, generation falls back with one warning line."""

from __future__ import annotations

import pytest
import torch

from models import Conditioning
from models.draw import Draw
from models.fused import FusedStream, unavailable
from models.sampling import _WARNED, sample_stage
from tests.helpers_models import inputs
from tests.models.test_models import PATHS, assert_logits_close, make_stage, path_case

pytest.importorskip("numba")


@pytest.mark.parametrize("shipped", [False, True], ids=["linear_off", "shipped"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("index", [0, 1])
def test_fused_logits_equal_forward(path, index, shipped):
    st, d, kw, _ = path_case(path, index, shipped)
    x = d["x"]
    if not st.head.float_input and st.end_code is not None:
        x[0, -3:] = st.end_code
    with torch.no_grad():
        ref = st(x, Conditioning(**kw))  # (B, C, T)
        out = FusedStream(st, 2, Conditioning(**kw), chunk=24).logits(x)  # several chunks and history frames
    assert_logits_close(out, ref, st)


def _both(st, n, cond, conditioned=False, prompt=None, **draw):
    """(reference, fused) results and the generator states they leave, same seed."""
    out = []
    for engine in ("reference", "fused"):
        g = torch.Generator().manual_seed(11)
        res = sample_stage(st, n, 2, cond, Draw(**draw), no_genre=st.n_genres, conditioned=conditioned,
                           prompt=prompt, generator=g, engine=engine)
        out.append((res, g.get_state()))
    return out


@pytest.mark.parametrize("case", ["guided_topp", "guided_genre_twin", "prior_prompt", "greedy", "ends", "mixture",
                                  "score_residual", "steady_scale", "score_share", "scale_anchor", "scale_clip",
                                  "share_power", "timbre", "crossfade", "line_width"])
def test_fused_sampling_matches_reference_for_the_same_seed(case):
    """Same seed, same samples, same lengths, and the generator left in the same state (the cascade
    draws the next stage from it)."""
    from tests.helpers_models import shipped_linear

    if case == "ends":
        st = make_stage(index=0, shipped=True, end_class=True, use_genre=True, use_roll=True,
                        history={"enabled": True}, score={"enabled": True})
        with torch.no_grad():  # END likely enough to end both streams within the piece
            st.out2.bias[st.end_code] = 4.0
    elif case == "mixture":  # PCM floats: the component and the logistic from two stream uniforms
        st = make_stage(index=1, head="logistic_mixture", mixtures=4, use_tier_below=True, use_genre=True,
                        history={"enabled": True})
    elif case in ("score_residual", "steady_scale", "score_share", "scale_anchor", "scale_clip", "share_power"):
        st = make_stage(index=1, shipped=True, use_tier_below=True, use_roll=True, use_genre=True,
                        score={"enabled": True, "order": 24})
    elif case == "timbre":  # a learned envelope per genre on the score taps: each row's genre picks its own
        st = make_stage(index=1, shipped=True, use_tier_below=True, use_roll=True, use_genre=True,
                        score={"enabled": True, "order": 24, "timbre_knots": 6})
    elif case == "line_width":  # a learned line width per genre on the score taps (stage 0: blended taps)
        st = make_stage(index=0, shipped=True, use_roll=True, use_genre=True,
                        score={"enabled": True, "timbre_knots": 4, "learned_bandwidth": True})
        with torch.no_grad():
            st.score.line_width.copy_(torch.linspace(-0.1, 0.3, st.score.line_width.numel()))
    elif case == "crossfade":  # the taps cross-faded where the notes change
        st = make_stage(index=1, shipped=True, use_tier_below=True, use_roll=True, use_genre=True,
                        score={"enabled": True, "order": 24, "timbre_knots": 6, "crossfade_ms": 4.0})
    elif case in ("guided_topp", "guided_genre_twin"):
        st = make_stage(index=0, shipped=True, use_genre=True, use_roll=True, history={"enabled": True})
    else:
        st = make_stage(index=1, shipped=True, use_tier_below=True, use_genre=True)
    assert shipped_linear()  # the shipped settings: linear path and adaptive scale on
    n = max(2 * st.receptive_field, 2 * st.linear_receptive_field, 200)
    d = inputs(st, n)
    cond = Conditioning(genre=d["genre"], below=d["below"] if st.use_below else None,
                        roll=d["roll"] if st.use_roll else None)
    kw = {"guided_topp": dict(guidance=1.5, conditioned=True, top_p=0.8, temperature=0.9),
          "guided_genre_twin": dict(guidance=1.5, keep_roll=True, conditioned=True, temperature=0.9),
          "prior_prompt": dict(tier_prior=0.1, prompt=d["x"][:, :40], temperature=0.6),
          "greedy": dict(temperature=0.0),
          "ends": dict(free_length=True, min_length=20, round_to=8, end_threshold=0.3),
          "mixture": dict(temperature=0.8, prompt=d["x"][:, :24]),
          "score_residual": dict(tier_prior=0.1, temperature=0.6),
          "steady_scale": dict(steady_scale=True, temperature=0.6, prompt=d["x"][:, :40]),
          "score_share": dict(score_share=1.0, temperature=0.6),
          "scale_anchor": dict(scale_anchor=0.7, anchor_ratio=0.3, temperature=0.6),
          "scale_clip": dict(scale_clip=1.0, temperature=1.0, prompt=d["x"][:, :40]),
          "share_power": dict(share_power=0.2, temperature=0.6),
          "timbre": dict(tier_prior=0.1, temperature=0.6),
          "crossfade": dict(tier_prior=0.1, temperature=0.6),
          "line_width": dict(temperature=0.6)}[case]
    (ref, g_ref), (fused, g_fused) = _both(st, n, cond, **kw)
    assert ref.engine == "reference" and fused.engine == "fused"
    assert ref.x.dtype == fused.x.dtype
    if case == "mixture":  # 16-bit bins are 3e-5 wide: float32 differences (~1e-6) may flip a rounding
        from models.heads import PCM_BINS

        assert (ref.x - fused.x).abs().max().item() <= 2.0 / (PCM_BINS - 1) * 1.001
        assert (ref.x == fused.x).float().mean().item() >= 0.95
    else:
        assert torch.equal(ref.x, fused.x)
    assert ref.lengths == fused.lengths
    assert torch.equal(g_ref, g_fused)
    if case == "ends":
        assert max(ref.lengths) < n and ref.x.shape[1] < n  # the streams did end, early
    if case == "prior_prompt":
        assert torch.equal(fused.x[:, :40], d["x"][:, :40])
    if case == "steady_scale":  # drawn residuals read / 0.6 by the scale: other draws after the prompt
        (_, _), (plain, _) = _both(st, n, cond, **{**kw, "steady_scale": False})
        assert torch.equal(plain.x[:, :41], fused.x[:, :41]) and not torch.equal(plain.x, fused.x)
    if case == "score_share":  # the taps' full share where notes sound: other draws than the network's share
        (_, _), (own, _) = _both(st, n, cond, **{**kw, "score_share": 0.0})
        assert not torch.equal(own.x, fused.x)
    if case == "scale_anchor":  # the scale mixed with the tier below's level: other draws than the plain scale's
        (_, _), (plain, _) = _both(st, n, cond, **{**kw, "scale_anchor": 0.0})
        assert not torch.equal(plain.x, fused.x)
    if case == "share_power":  # the network's share raised to 0.2: other draws than its own share
        (_, _), (own, _) = _both(st, n, cond, **{**kw, "share_power": 1.0})
        assert not torch.equal(own.x, fused.x)
    if case == "scale_clip":  # drawn residuals clipped to the draw's scale: other draws after the prompt alone
        (_, _), (plain, _) = _both(st, n, cond, **{**kw, "scale_clip": 0.0})
        assert torch.equal(plain.x[:, :41], fused.x[:, :41]) and not torch.equal(plain.x, fused.x)
    if case == "guided_genre_twin":  # a twin that keeps the roll guides otherwise than the unconditional twin
        (_, _), (away, _) = _both(st, n, cond, **{**kw, "keep_roll": False})
        assert not torch.equal(away.x, fused.x)
    if case == "timbre":  # the envelope shapes the draws: flattened, other samples
        with torch.no_grad():
            st.score.envelope.zero_()
        (_, _), (flat, _) = _both(st, n, cond, **kw)
        assert not torch.equal(flat.x, fused.x)
    if case == "line_width":  # the rows' widths shape the draws: every width the start's 1 Hz, other samples
        with torch.no_grad():
            st.score.line_width.zero_()
        (_, _), (plain, _) = _both(st, n, cond, **kw)
        assert not torch.equal(plain.x, fused.x)
    if case == "crossfade":  # the taps switched at once where the notes change: other samples
        st.score.fade = 0
        (_, _), (switched, _) = _both(st, n, cond, **kw)
        assert not torch.equal(switched.x, fused.x)
    if case == "mixture":
        assert fused.x.dtype == torch.float32 and len(fused.x.unique()) > 50  # varied PCM values


def test_fused_unavailable_falls_back_with_one_warning(capfd):
    as64 = make_stage(index=1, shipped=True, use_tier_below=True, dtype=torch.float64)
    mixture64 = make_stage(index=1, head="logistic_mixture", mixtures=2, use_tier_below=True, dtype=torch.float64)
    assert "float32" in unavailable(as64) and "float32" in unavailable(mixture64)
    _WARNED.clear()
    for st in (as64, as64, mixture64):
        d = inputs(st, 64)
        cond = Conditioning(below=d["below"])
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        a = sample_stage(st, 64, 2, cond, no_genre=st.n_genres, generator=g1, engine="fused")
        b = sample_stage(st, 64, 2, cond, no_genre=st.n_genres, generator=g2, engine="reference")
        assert a.engine == "reference" and torch.equal(a.x, b.x)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: fused engine unavailable")  # once per reason
    with pytest.raises(ValueError, match="engine must be one of"):
        sample_stage(as64, 8, 1, Conditioning(), no_genre=0, engine="turbo")


def test_streams_do_not_depend_on_batching_or_worker_groups():
    """Each stream draws from its own seed: the fused engine in 1 or 2 groups on threads, and the
    reference, give the same samples; and stream 0 of a batch of 3 is a batch of 1's stream."""
    st = make_stage(index=0, shipped=True, end_class=True, use_genre=True, use_roll=True, history={"enabled": True})
    n = 2 * st.receptive_field + 40
    d = inputs(st, n, b=3)
    d["genre"] = torch.tensor([0, 1, 2])
    cond = Conditioning(genre=d["genre"], roll=d["roll"])
    draw, kw = Draw(guidance=1.0, temperature=0.9), dict(conditioned=True, prompt=d["x"][:, :16])
    runs = {}
    for name, engine, workers in (("one", "fused", 1), ("two", "fused", 2), ("ref", "reference", 1)):
        g = torch.Generator().manual_seed(4)
        runs[name] = sample_stage(st, n, 3, cond, draw, no_genre=st.n_genres, generator=g, engine=engine,
                                  workers=workers, **kw).x
    assert torch.equal(runs["one"], runs["two"]) and torch.equal(runs["one"], runs["ref"])
    g = torch.Generator().manual_seed(4)
    single = sample_stage(st, n, 1, cond.rows(torch.tensor([0])), draw, no_genre=st.n_genres, generator=g,
                          **{**kw, "prompt": d["x"][:1, :16]}).x
    assert torch.equal(single[0], runs["one"][0])


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_history_step_equals_the_history_stacks_step(kernel_size):
    """``history_step`` (numba) gives ``HistoryStack.step``'s features, frame after frame, for every row:
    the same queues (zeros before frame 0), taps and gate, to float32 rounding (1e-5 of the features' scale)."""
    import numpy as np

    from models.context import HistoryStack
    from models.fused import pack_history
    from models.fused_kernel import history_step

    torch.manual_seed(0)
    hist = HistoryStack(24, 16, 5, kernel_size, pool=64).eval()
    with torch.no_grad():
        for p in hist.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the initialisation: every weight matters
    rows, c = 3, 16
    state, w = hist.init_state(rows), pack_history(hist)
    ring = np.zeros((int(w["spans"].sum()), rows, c), np.float32)
    work = [np.zeros(sh, np.float32) for sh in ((rows, c), (rows, kernel_size * c), (rows, 2 * c), (rows, c),
                                                  (rows, c))]
    for n in range(70):  # past the widest layer's span (33 frames): the queues wrap
        mean = torch.randn(rows, 24)
        with torch.no_grad():
            ref = hist.step(state, mean).numpy()
        history_step(mean.numpy(), w["w_in"], w["b_in"], n, ring, w["ring_off"], w["spans"], w["dil"], w["wconv"],
                     w["bconv"], w["wres"], w["bres"], *work)
        assert np.abs(work[0] - ref).max() <= 1e-5 * np.abs(ref).max(), f"frame {n}"
