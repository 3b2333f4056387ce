"""Weights in int8, int4 and bf16 (models/quant.py): the formats' error bounds, the fused engine against
the reference with the same (fake-quantized) weights, and the ``weights`` key through model.json,
the run config and its checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import Conditioning, load_stage, save_stage
from models.quant import (
    WEIGHT_FORMATS,
    dequantize_int4,
    dequantize_int8,
    fake_quant,
    from_bf16,
    int4_pairs,
    quantize_int4,
    quantize_int8,
    quantize_stage,
    stage_weights,
    to_bf16,
)
from tests.models.test_models import assert_logits_close, make_stage, path_case

QUANT = [f for f in WEIGHT_FORMATS if f != "float32"]


def test_int8_per_channel_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 40, 24)) * rng.uniform(0.01, 10, (3, 1, 24))).astype(np.float32)  # (L, I, O)
    w[1, :, 5] = 0.0  # an all-zero channel
    q, scale = quantize_int8(w)
    assert q.dtype == np.int8 and q.shape == w.shape and scale.shape == (3, 24) and scale.dtype == np.float32
    assert np.abs(q.astype(np.int32)).max() == 127 and q.min() >= -127
    err = np.abs(dequantize_int8(q, scale) - w)
    assert (err <= scale[:, None, :] * (0.5 + 1e-5)).all()
    assert (dequantize_int8(q, scale)[1, :, 5] == 0).all() and scale[1, 5] == 1.0
    # the largest weight of each channel is exact (to float32 rounding): the grid's end
    top = np.abs(w).max(axis=1)
    assert np.allclose(np.abs(dequantize_int8(q, scale)).max(axis=1), top, rtol=1e-6)
    # quantizing the values a format holds gives them back (the kernel re-quantizes a quantized stage)
    fq = fake_quant(w, "int8")
    assert np.allclose(fake_quant(fq, "int8"), fq, rtol=1e-6, atol=0)


def test_int4_per_channel_error_is_at_most_half_a_step_and_pairs_inputs_in_a_byte():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((3, 40, 24)) * rng.uniform(0.01, 10, (3, 1, 24))).astype(np.float32)  # (L, I, O)
    w[1, :, 5] = 0.0
    packed, scale = quantize_int4(w)
    assert packed.dtype == np.uint8 and packed.shape == (3, 20, 24) and scale.shape == (3, 24)
    q = np.rint(w / scale[:, None, :]).astype(np.int64)
    assert np.abs(q).max() == 7
    assert np.array_equal(packed.view(np.int8).astype(np.int64), q[:, 0::2] + 16 * q[:, 1::2])  # as documented
    lo, hi = int4_pairs(packed)  # the kernel's float arithmetic gives the integers back
    assert np.array_equal(lo, q[:, 0::2]) and np.array_equal(hi, q[:, 1::2])
    every = np.array([[a + 16 * b for a in range(-7, 8) for b in range(-7, 8)]], np.int8).view(np.uint8)
    lo, hi = int4_pairs(every)
    assert np.array_equal(lo + 16 * hi, every.view(np.int8))
    assert lo.min() == hi.min() == -7 and lo.max() == hi.max() == 7
    d = dequantize_int4(packed, scale)
    assert (np.abs(d - w) <= scale[:, None, :] * (0.5 + 1e-5)).all()
    assert (d[1, :, 5] == 0).all() and scale[1, 5] == 1.0
    fq = fake_quant(w, "int4")
    assert np.allclose(fake_quant(fq, "int4"), fq, rtol=1e-6, atol=0)
    odd, s_odd = quantize_int4(w[:, :39])  # an odd input count: the last byte row's second weight is a zero
    assert odd.shape == (3, 20, 24) and (int4_pairs(odd)[1][:, -1] == 0).all()
    assert np.array_equal(dequantize_int4(odd, s_odd, n_in=39), fake_quant(w[:, :39], "int4"))


def test_bf16_rounds_to_nearest_even():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal(1000) * 10.0 ** rng.uniform(-4, 4, 1000)).astype(np.float32)
    h = to_bf16(w)
    assert h.dtype == np.uint16
    assert (np.abs(from_bf16(h) - w) <= np.abs(w) * 2.0 ** -8).all()
    # ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (mantissa ends 0 and 1)
    ties = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], np.float32)
    assert from_bf16(to_bf16(ties)).tolist() == [1.0, 1 + 2 ** -6, -1.0]
    assert from_bf16(to_bf16(np.float32([1 + 2 ** -8 + 2 ** -20])))[0] == 1 + 2 ** -7  # above the tie: up
    assert np.array_equal(from_bf16(to_bf16(from_bf16(h))), from_bf16(h))


def test_bad_format_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"weights: 'int2' not one of float32 \| bf16 \| int8 \| int4"):
        fake_quant(np.zeros((2, 2), np.float32), "int2")


@pytest.mark.parametrize("fmt", QUANT)
def test_quantized_stage_packs_to_the_same_values(fmt):
    """The reference (the stage's modules, fake-quantized) and the kernel's packed matrices hold the
    same numbers: per-channel groups of a Conv1d weight are the packed matrices' columns."""
    from models.fused import MATRICES, pack

    st = quantize_stage(make_stage(index=1, shipped=True, use_tier_below=True), fmt)
    assert stage_weights(st) == fmt
    float_vals, packed = pack(st, loops=False), pack(st, loops=True)
    for name, sname in MATRICES:
        a = packed[name]
        assert a.dtype == {"int8": np.int8, "int4": np.uint8, "bf16": np.uint16}[fmt]
        held = {"int8": lambda: dequantize_int8(a, packed[sname]), "int4": lambda: dequantize_int4(a, packed[sname]),
                "bf16": lambda: from_bf16(a)}[fmt]()
        assert np.allclose(held, float_vals[name], rtol=1e-6, atol=1e-12)
        st.weights = "float32"  # the stage's own values, not quantized again
        assert np.allclose(pack(st)[name], held, rtol=1e-6, atol=1e-12)
        st.weights = fmt


@pytest.mark.parametrize("fmt", QUANT)
@pytest.mark.parametrize("path", ["all", "mixture", "score_residual", "kernel3"])
@pytest.mark.parametrize("blas", [False, True], ids=["loops", "blas"])
def test_fused_quantized_logits_equal_the_quantized_reference(fmt, path, blas):
    """The fused engine with int8 / int4 / bf16 matrices (its loops; from BLAS_ROWS rows up BLAS on the
    values they hold) matches the reference with fake-quantized weights, to the float32 test's tolerance."""
    from models.fused import FusedStream

    pytest.importorskip("numba")
    st, d, kw, _ = path_case(path, 1, True)
    quantize_stage(st, fmt)
    with torch.no_grad():
        ref = st(d["x"], Conditioning(**kw))  # (B, C, T)
        out = FusedStream(st, 2, Conditioning(**kw), chunk=24, blas_rows=1 if blas else None).logits(d["x"])
    assert_logits_close(out, ref, st)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_sampling_matches_the_reference_for_the_same_seed(fmt):
    from models.draw import Draw
    from models.sampling import sample_stage
    from tests.helpers_models import inputs

    pytest.importorskip("numba")
    st = quantize_stage(make_stage(index=1, shipped=True, use_tier_below=True, use_genre=True), fmt)
    n = max(2 * st.receptive_field, 2 * st.linear_receptive_field, 200)
    d = inputs(st, n)
    cond = Conditioning(genre=d["genre"], below=d["below"])
    xs = []
    for engine in ("reference", "fused"):
        g = torch.Generator().manual_seed(5)
        res = sample_stage(st, n, 2, cond, Draw(temperature=0.7, tier_prior=0.1), no_genre=st.n_genres,
                           generator=g, engine=engine)
        assert res.engine == engine
        xs.append(res.x)
    assert torch.equal(xs[0], xs[1])


def test_weights_round_trip_through_model_json(tmp_path):
    st = make_stage(index=1, shipped=True, use_tier_below=True)
    save_stage(st, tmp_path / "f32")
    meta = json.loads((tmp_path / "f32" / "model.json").read_text())
    assert meta["weights"] == "float32"
    del meta["weights"]  # a stage saved before the key: float32, loads unchanged
    (tmp_path / "f32" / "model.json").write_text(json.dumps(meta))
    old = load_stage(tmp_path / "f32")
    assert stage_weights(old) == "float32"
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), st.state_dict().values()))

    q = quantize_stage(make_stage(index=1, shipped=True, use_tier_below=True), "int8")
    save_stage(q, tmp_path / "q")
    assert json.loads((tmp_path / "q" / "model.json").read_text())["weights"] == "int8"
    back = load_stage(tmp_path / "q")
    assert stage_weights(back) == "int8"
    for (name, a), b in zip(back.state_dict().items(), q.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-6, atol=0), name
    assert not torch.equal(q.convs[0].weight, st.convs[0].weight)  # quantized: not the float32 values

    meta = json.loads((tmp_path / "q" / "model.json").read_text())
    (tmp_path / "q" / "model.json").write_text(json.dumps({**meta, "weights": "int2"}))
    from models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"weights: 'int2' not one of float32 \| bf16 \| int8 \| int4"):
        load_stage(tmp_path / "q")


def test_run_config_weights_quantize_at_load_and_bad_values_fail(tmp_path):
    from pipeline.config import ConfigError, config_from_dict, config_to_dict, save_config
    from pipeline.run import load_run
    from tests.helpers_run import make_run, tiny_config

    run = make_run(tmp_path)
    plain = load_run(run)
    assert [stage_weights(s) for s in plain.stages] == ["float32", "float32"]
    raw = config_to_dict(tiny_config())
    raw["stages"][1]["weights"] = "int8"
    save_config(config_from_dict(raw), run / "config.yaml")  # post-training: no retraining
    q = load_run(run)
    assert [stage_weights(s) for s in q.stages] == ["float32", "int8"]
    assert torch.equal(q.stages[0].convs[0].weight, plain.stages[0].convs[0].weight)
    assert torch.equal(q.stages[1].convs[0].weight,
                       quantize_stage(plain.stages[1], "int8").convs[0].weight)
    raw["stages"][1]["weights"] = "fp8"
    with pytest.raises(ConfigError, match=r"stages\[1\]\.weights: 'fp8' not one of float32 \| bf16 \| int8"):
        config_from_dict(raw)
