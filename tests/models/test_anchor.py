"""The anchored scale (models/anchor.py): the tier below's level, the scale the engines then use, its
calibration on a training split (pipeline/training/scale_anchor.py) and its use by generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import Conditioning
from models.anchor import ANCHOR_FILE, ANCHOR_WINDOW, below_level, genre_ratio
from models.draw import Draw
from models.predictor import ADAPT_FLOOR
from models.sampling import sample_stage
from tests.helpers_models import inputs
from tests.models.test_models import make_stage


def test_below_level_is_a_causal_moving_mean_of_the_magnitude():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 100, generator=g, dtype=torch.float64)
    level = below_level(v, 0, 100)  # (2, 100)
    a = v.abs().numpy()
    for j in (0, 5, ANCHOR_WINDOW - 1, ANCHOR_WINDOW, 99):
        expect = a[:, max(0, j - ANCHOR_WINDOW + 1):j + 1].sum(1) / ANCHOR_WINDOW  # zeros before 0
        np.testing.assert_allclose(level[:, j].numpy(), expect, rtol=1e-12)
    chunks = torch.cat([below_level(v, j0, j0 + 25) for j0 in range(0, 100, 25)], dim=1)
    np.testing.assert_allclose(chunks.numpy(), level.numpy(), rtol=1e-12)  # chunk by chunk = the whole


def test_genre_ratio_reads_the_genre_or_the_pool():
    anchor = {"ratios": {"folk": 0.2}, "pooled": 0.3}
    assert genre_ratio(anchor, "folk") == 0.2
    assert genre_ratio(anchor, None) == 0.3 and genre_ratio(anchor, "chorale") == 0.3
    assert genre_ratio(None, "folk") is None


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_full_anchor_sets_the_scale_from_the_tier_below_alone(engine):
    """mix 1: s_adapt = floor + ratio * level(t // factor) at every step, whatever the stage drew."""
    if engine == "fused":
        pytest.importorskip("numba")
    st = make_stage(index=1, shipped=True, use_tier_below=True, use_genre=True)
    n = 240
    d = inputs(st, n)
    cond = Conditioning(genre=d["genre"], below=d["below"])
    seen = []
    if engine == "reference":
        plain = st.linear.adapt_log_s
        st.linear.adapt_log_s = lambda s, log_s: (seen.append(s.clone()), plain(s, log_s))[1]
    draw = Draw(temperature=0.5, scale_anchor=1.0, anchor_ratio=0.4)
    x = sample_stage(st, n, 2, cond, draw, no_genre=st.n_genres, generator=torch.Generator().manual_seed(3),
                     engine=engine).x
    level = below_level(st.linear.decode(d["below"]).double(), 0, n // st.factor).repeat_interleave(st.factor, 1)
    expect = ADAPT_FLOOR + 0.4 * level  # (2, n)
    if engine == "reference":
        got = torch.stack(seen, dim=1).double()  # (2, n)
        np.testing.assert_allclose(got.numpy(), expect.numpy(), rtol=1e-5, atol=1e-7)
    else:  # the fused engine's draws equal the reference's (its scale is the same)
        ref = sample_stage(st, n, 2, cond, draw, no_genre=st.n_genres, generator=torch.Generator().manual_seed(3),
                           engine="reference").x
        assert torch.equal(ref, x)


def _data_with_a_bright_genre(root):
    """A two-genre training split whose "folk" tracks carry noise in the fine tier above their tier below."""
    from pipeline.io import atomic_save_npy, load_npy
    from tests.helpers_data import make_dataset, read_manifest

    data = make_dataset(root, rates=(1000, 2000), genres=("chorale", "folk"), seconds=1.5, roll="notes",
                        splits={"train": 6, "valid": 1, "test": 1})
    rng = np.random.default_rng(0)
    for t in read_manifest(data)["tracks"]:
        if t["genre"] == "folk":
            p = data / t["tiers"]["2000"]
            x = load_npy(p).astype(np.int64)
            atomic_save_npy(p, np.clip(x + rng.integers(-80, 81, len(x)), 0, 255).astype(np.uint8))
    return data


def test_calibration_finds_the_genre_with_more_fine_band_brighter(tmp_path):
    from pipeline.training.scale_anchor import read_calibration, write_calibration
    from tests.helpers_run import make_run

    data = _data_with_a_bright_genre(tmp_path / "data")
    run = make_run(tmp_path)
    out = write_calibration(run, data, 1)
    assert read_calibration(run / "stages" / "1") == json.loads((run / "stages" / "1" / ANCHOR_FILE).read_text())
    assert set(out["ratios"]) == {"chorale", "folk"} and out["tracks"] == {"chorale": 3, "folk": 3}
    assert out["ratios"]["folk"] > 1.3 * out["ratios"]["chorale"] > 0
    assert min(out["ratios"].values()) < out["pooled"] < max(out["ratios"].values())


def test_generation_anchors_a_calibrated_stage_and_says_when_it_cannot(tmp_path, capfd):
    from pipeline.generation.generate import generate
    from pipeline.training.scale_anchor import write_calibration
    from tests.helpers_run import make_run

    run = make_run(tmp_path)
    kw = dict(seconds=0.2, seed=3, genre="folk", progress=False)
    plain = generate(run, tmp_path / "plain", **kw)[0]
    missing = generate(run, tmp_path / "missing", scale_anchor=(0.0, 1.0), **kw)[0]
    assert "has no scale_anchor.json" in capfd.readouterr().err
    assert (plain / "audio.wav").read_bytes() == (missing / "audio.wav").read_bytes()  # not anchored
    write_calibration(run, _data_with_a_bright_genre(tmp_path / "data"), 1)
    anchored = generate(run, tmp_path / "anchored", scale_anchor=(0.0, 1.0), **kw)[0]
    assert (plain / "tier_1000.wav").read_bytes() == (anchored / "tier_1000.wav").read_bytes()  # stage 0 as before
    assert (plain / "audio.wav").read_bytes() != (anchored / "audio.wav").read_bytes()
    assert json.loads((anchored / "meta.json").read_text())["parameters"]["scale_anchor"] == [0.0, 1.0]
