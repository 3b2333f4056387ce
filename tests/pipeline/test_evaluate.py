"""pipeline.evaluation.evaluate: exact held-out bits with known answers, ablation rows, the DESIGN 6 JSON."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.errors import RunError
from pipeline.evaluation.evaluate import _align, _rows, evaluate_run, overlap, score_track
from pipeline.run import load_run
from pipeline.training.train import train_stage
from tests.helpers_data import make_dataset, periodic_signal, tiny_train_config

FAST = dict(eval_every=1000, checkpoint_every=1000, log_every=1000, ema_decay=0.9)


pytestmark = pytest.mark.slow  # trains stages or runs flows


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("periodic")
    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=2.0, roll="notes",
                        splits={"train": 4, "valid": 1, "test": 2})
    cfg = tiny_train_config(max_steps=30, **FAST)
    for k in (0, 1):
        train_stage(data, root / "run", cfg, k, progress=False)
    return data, root / "run", cfg


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    data = make_dataset(root / "data", "noise", rates=(1000,), seconds=4.0, roll=None,
                        splits={"train": 6, "valid": 1, "test": 2})
    cfg = tiny_train_config(rates=(1000,), max_steps=30, history=False, end_class=False, **FAST)
    train_stage(data, root / "run", cfg, 0, progress=False)
    return data, root / "run", cfg


@pytest.fixture(scope="module")
def harmonic_run(tmp_path_factory):
    """Noisy harmonic tracks (period-32 waveform + white noise, random notes as roll) and a run of
    untrained stages whose linear path is fitted by least squares the way training starts
    (``warm_start_linear``: network logits zeroed), so the run's output is a known linear predictor."""
    from models import build_stage, save_stage
    from pipeline.config import save_config
    from pipeline.corpus.audio import make_tiers
    from pipeline.corpus.dataset import load_manifest
    from pipeline.io import atomic_save_npy
    from pipeline.training.train_parts import warm_start_linear

    root = tmp_path_factory.mktemp("harmonic")
    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=4.0, roll="notes",
                        splits={"train": 4, "valid": 1, "test": 2})
    manifest = load_manifest(data)
    rng = np.random.default_rng(1)
    for t in manifest["tracks"]:  # the same tracks with noise: a few bits per sample to predict
        n = t["samples"]["2000"]
        audio = periodic_signal(n, int(rng.integers(0, 32))) + 0.05 * rng.standard_normal(n).astype(np.float32)
        for rate, codes in make_tiers(np.clip(audio, -1, 1).astype(np.float32), (1000, 2000)).items():
            atomic_save_npy(data / t["tiers"][str(rate)], codes.astype(np.uint8))
    cfg = tiny_train_config(history=False)
    run = root / "run"
    save_config(cfg, run / "config.yaml")
    for k in (0, 1):
        stage = build_stage(cfg, k, len(manifest["genres"]))
        warm_start_linear(stage, data, manifest, cfg, k, seed=0)
        save_stage(stage, run / "stages" / str(k), extra={})
    return data, run, cfg


def test_lstsq_initialised_stages_score_like_the_linear_baseline(harmonic_run):
    """The same job as the baseline (least-squares taps on own past and the tier below) scored by
    the stage's hybrid head: within a narrow band of the baseline's bits, never far below it (a
    stage that peeks at x[t] would score ~0 bits) nor above (misaligned scoring costs bits)."""
    data, run, _ = harmonic_run
    res = evaluate_run(data, run, split="test", progress=False)
    for s in res["stages"]:
        bits, lin = s["bits_per_sample"], s["linear_baseline_bits_per_sample"]
        assert 1.5 < lin < 5.0, s
        assert abs(bits - lin) < 0.15, s  # measured: 0.01-0.08 (logistic vs Laplace residuals)


def test_without_conditioning_scores_worse_where_conditioning_informs(harmonic_run):
    """Stage 1's tier below (incl. its lookahead) tells much about the next sample: the row
    without conditioning (tier below dropped, the linear path on its own-past taps) must cost
    clearly more; stage 0 reads only genre and roll, which this linear predictor ignores."""
    data, run, _ = harmonic_run
    s0, s1 = evaluate_run(data, run, split="test", progress=False)["stages"]
    assert s1["bits_per_sample_without_conditioning"] > s1["bits_per_sample"] + 0.5, s1  # measured: +1.3
    assert s0["bits_per_sample_without_conditioning"] == pytest.approx(s0["bits_per_sample"], abs=0.02), s0


def test_workers_and_progress(harmonic_run, capsys):
    """Threads change nothing in the result; without a terminal, one line per finished stage."""
    data, run, _ = harmonic_run
    one = evaluate_run(data, run, split="test", workers=1, progress=False)
    two = evaluate_run(data, run, split="test", workers=2, progress=True)
    assert one["stages"] == two["stages"] and one["baselines"] == two["baselines"]
    assert two["timings"]["workers"] == 2 and two["timings"]["wall_s"] > 0
    err = capsys.readouterr().err
    for label in ("stage 0 (1000 Hz) done", "stage 1 (2000 Hz) done", "baselines done"):
        assert label in err and "s elapsed" in err, err


def test_max_seconds_scores_the_first_seconds_exactly(harmonic_run):
    """``stop`` scores a prefix with what follows still read as lookahead: the same bits as the
    whole track's pass; evaluate_run records ``max_seconds``."""
    from pipeline.corpus.dataset import iter_tracks

    data, run, cfg = harmonic_run
    stages = load_run(run, partial=True).by_index()
    item = next(iter_tracks(data, cfg, 1, "test"))
    whole = score_track(stages[1], item, cfg, 1, 2, ["full", "uncond"])
    head = score_track(stages[1], item, cfg, 1, 2, ["full", "uncond"], chunk=600, stop=1500)
    assert head.shape == (2, 1500)
    torch.testing.assert_close(head, whole[:, :1500], rtol=1e-4, atol=1e-4)
    res = evaluate_run(data, run, split="test", max_seconds_per_track=0.75, progress=False)
    assert res["max_seconds"] == 0.75 and res["seconds"] == pytest.approx(1.5)
    assert [s["samples"] for s in res["stages"]] == [2 * 750, 2 * 1500]
    assert evaluate_run(data, run, split="test", progress=False)["max_seconds"] is None


def test_cli_max_seconds(harmonic_run, tmp_path, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    data, run, _ = harmonic_run
    out = tmp_path / "evaluation.json"
    result = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--run", str(run),
                                      "--max-seconds", "0.5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    assert res["max_seconds"] == 0.5 and res["seconds"] == pytest.approx(1.0)
    bad = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--run", str(run), "--max-seconds", "0"])
    assert bad.exit_code == 2 and "--max-seconds" in bad.output


def _base_geometry_stage(k: int):
    """Stage k of configs/base.yaml (dilations, kernel sizes, conditioning stack, lookahead: the
    receptive fields) with 4 channels, every parameter perturbed so that far inputs matter."""
    from models import build_stage
    from pipeline.config import load_config
    from tests.helpers_run import perturb

    cfg = load_config("base")
    s = cfg.stages[k]
    small = dataclasses.replace(s, residual_channels=4, gate_channels=4, skip_channels=8,
                                conditioning=dataclasses.replace(s.conditioning, channels=4),
                                history=dataclasses.replace(s.history, channels=4))
    torch.manual_seed(k)
    stage = build_stage(cfg, k, 2, stage_cfg=small)
    perturb(stage, 100 + k)
    return stage.eval(), cfg


@pytest.mark.parametrize("k", [1, 2])
def test_chunked_scoring_is_exact_with_the_base_geometry(k):
    """Base stage 1 reaches ~4,830 samples back through its conditioning stack (729 inputs at the
    2 kHz tier, x4) and main stack (2,047); chunks must include that (the old overlap, 2,891
    samples, changed 1,918 of these scores by up to 0.06 bits)."""
    stage, cfg = _base_geometry_stage(k)
    n = 16000
    g = torch.Generator().manual_seed(k)
    item = {"x": torch.randint(0, 256, (n,), generator=g), "genre": torch.tensor(1), "has_roll": True,
            "below": torch.randint(0, 256, (n // stage.factor,), generator=g),
            "roll": (torch.rand(256, n * cfg.data.roll_fps // stage.rate, generator=g) > 0.9).float()}
    back, _ = overlap(stage, _align(cfg, k, stage))
    cond = stage.conditioning
    assert back >= stage.receptive_field + (cond.receptive_field - 1 - cond.lookahead) * cond.up
    whole = score_track(stage, item, cfg, k, 2, ["full", "uncond"], chunk=n)
    chunked = score_track(stage, item, cfg, k, 2, ["full", "uncond"], chunk=4000)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_periodic_signal_known_answer_and_json_keys(periodic_run):
    data, run, cfg = periodic_run
    res = evaluate_run(data, run, split="test", progress=False)
    assert res["split"] == "test" and res["tracks"] == 2 and res["seconds"] == pytest.approx(4.0)
    assert [s["index"] for s in res["stages"]] == [0, 1]
    for s, rate in zip(res["stages"], (1000, 2000)):
        assert s["rate"] == rate and s["samples"] == 2 * 2 * rate
        assert s["bits_per_sample"] < 3.0, s  # far below 8 bits after a short training
        assert s["bits_per_sample"] - 0.5 < s["bits_per_sample_without_conditioning"] < 9.0, s
        assert s["linear_baseline_bits_per_sample"] < 1.0, s
    assert "bits_per_sample_short_context" in res["stages"][0]  # stage 0 has a history stack
    assert "bits_per_sample_short_context" not in res["stages"][1]
    s0, s1 = res["stages"]
    expect = (s0["bits_per_sample"] * s0["samples"] + s1["bits_per_sample"] * s1["samples"]) / s1["samples"]
    assert res["cascade_bits_per_sample"] == pytest.approx(expect)
    assert set(res["baselines"]) == {"unigram_bits_per_sample", "linear_ar_bits_per_sample"}
    assert res["baselines"]["linear_ar_bits_per_sample"] < 1.0
    json.dumps(res)  # plain JSON


def test_max_seconds_per_track(periodic_run):
    data, run, _ = periodic_run
    res = evaluate_run(data, run, split="test", max_seconds_per_track=1.0, progress=False)
    assert res["seconds"] == pytest.approx(2.0) and res["max_seconds"] == 1.0
    assert [s["samples"] for s in res["stages"]] == [2 * 1000, 2 * 2000]


def test_chunked_scoring_equals_one_pass(periodic_run):
    from pipeline.corpus.dataset import iter_tracks

    data, run, cfg = periodic_run
    stages = load_run(run, partial=True).by_index()
    for k, variants in ((0, ["full", "uncond", "short"]), (1, ["full", "uncond"])):
        item = next(iter_tracks(data, cfg, k, "test"))
        whole = score_track(stages[k], item, cfg, k, 2, variants)
        chunked = score_track(stages[k], item, cfg, k, 2, variants, chunk=300)
        assert whole.shape == (len(variants), item["x"].shape[0])
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


def test_ablation_rows_drop_conditioning_like_training(periodic_run):
    """Without conditioning = the "no genre" id and drop masks (never zeroed inputs)."""
    from pipeline.corpus.dataset import iter_tracks

    data, run, cfg = periodic_run
    stage = load_run(run, partial=True).by_index()[1]
    item = next(iter_tracks(data, cfg, 1, "test"))
    c = _rows(stage, item, 2, ["full", "uncond"])
    assert c.genre.tolist() == [int(item["genre"]), 2]
    assert c.drop_below.tolist() == [False, True] and c.drop_roll.tolist() == [False, True]
    assert torch.equal(c.below[0], c.below[1]) and torch.equal(c.roll[0], c.roll[1])


def test_white_noise_cannot_be_beaten(noise_run):
    data, run, _ = noise_run
    res = evaluate_run(data, run, split="test", progress=False)
    bits = res["stages"][0]["bits_per_sample"]
    assert 7.9 < bits < 8.3, bits  # ~8 bits: nothing to learn, and no way below 8
    assert res["baselines"]["unigram_bits_per_sample"] == pytest.approx(8.0, abs=0.1)
    assert res["cascade_bits_per_sample"] == pytest.approx(bits)


def test_errors(periodic_run, tmp_path):
    data, run, cfg = periodic_run
    with pytest.raises(RunError, match="config.yaml"):
        evaluate_run(data, tmp_path / "missing")
    from pipeline.config import save_config

    (tmp_path / "bare").mkdir()
    save_config(cfg, tmp_path / "bare" / "config.yaml")
    with pytest.raises(RunError, match="no trained stage"):
        evaluate_run(data, tmp_path / "bare")


def test_ablation_parts_drop_one_input_each(periodic_run):
    """Roll and genre apart (stage 0); network and linear path apart (a stage with a tier below)."""
    from pipeline.corpus.dataset import iter_tracks
    from pipeline.evaluation.evaluate import VARIANT_KEYS, variants_of

    data, run, cfg = periodic_run
    stages = load_run(run, partial=True).by_index()
    item0 = next(iter_tracks(data, cfg, 0, "test"))
    v0 = [v for v in variants_of(stages[0]) if v != "short"]
    c = _rows(stages[0], item0, 2, v0)
    genre = int(item0["genre"])
    want = {"full": (genre, False), "uncond": (2, True), "no_roll": (genre, True), "no_genre": (2, False)}
    assert set(v0) == set(want)
    assert [(int(g), bool(d)) for g, d in zip(c.genre, c.drop_roll)] == [want[v] for v in v0]
    item1 = next(iter_tracks(data, cfg, 1, "test"))
    v1 = variants_of(stages[1])
    assert v1[:4] == ["full", "uncond", "uncond_network", "uncond_linear"]
    c = _rows(stages[1], item1, 2, v1)
    assert c.drop_below.tolist()[:4] == [False, True, True, False]
    assert c.drop_below_linear.tolist()[:4] == [False, True, False, True]
    assert all(v in VARIANT_KEYS for v in v0 + v1)
