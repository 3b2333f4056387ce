"""pipeline.training.train: learning, run-folder layout, exact resume, 2 CPU processes, budgets, clear errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import ConfigError, save_config
from pipeline.corpus.batches import (
    EndCrops,
    OpeningCrops,
    insert_end_crops,
    insert_opening_crops,
    loss_weights,
    silence_context,
)
from pipeline.errors import DatasetError, RunError
from pipeline.run import list_checkpoints, read_metrics
from pipeline.training.train import train_stage
from pipeline.training.train_parts import WarmupCosine
from tests.helpers_data import make_dataset, tiny_train_config

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.slow  # trains stages or runs flows


@pytest.fixture(scope="module")
def periodic(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "periodic", "periodic", rates=(1000, 2000),
                        seconds=2.0, roll="notes")


def free_port() -> int:
    from flows.train import free_port as fp

    return fp()


def losses(run: Path, k: int) -> dict[int, float]:
    return {r["step"]: r[f"stage{k}/loss"] for r in read_metrics(run, k) if f"stage{k}/loss" in r}


@pytest.mark.parametrize("stage,rates", [(0, (1000,)), (1, (500, 1000))], ids=["stage0", "fine-stage"])
def test_a_stage_fits_one_short_track_far_below_its_linear_start(tmp_path, stage, rates):
    """One 4 s track of the logistic map (each sample a nonlinear function of the one before), validated on
    itself: the stage's validation from step 0 (the least-squares linear start) must fall by at least 2 bits per
    sample in 150 steps.  If it cannot, training is broken, not short (issue 21; measured here: stage 0
    6.8 -> 2.2, a fine stage 4.1 -> 1.6)."""
    data = make_dataset(tmp_path / "data", "logistic", rates=rates, seconds=4.0, splits={"train": 1, "valid": 1},
                        genres=("alpha",), roll="zeros")
    manifest = json.loads((data / "manifest.json").read_text())
    train, valid = manifest["tracks"]
    valid["tiers"], valid["roll"] = train["tiers"], train["roll"]  # validated on the track it fits
    (data / "manifest.json").write_text(json.dumps(manifest))
    cfg = tiny_train_config(rates=rates, max_steps=150, eval_every=150, checkpoint_every=150, lr=0.01,
                            end_class=False, history=False)
    train_stage(data, tmp_path / "run", cfg, stage, progress=False)
    bits = {r["step"]: r[f"stage{stage}/valid_bits"] for r in read_metrics(tmp_path / "run", stage)
            if f"stage{stage}/valid_bits" in r}
    assert bits[150] < bits[0] - 2.0, bits


def test_loss_decreases_and_run_layout(periodic, tmp_path):
    cfg = tiny_train_config(max_steps=40, keep_checkpoints=2, checkpoint_every=10, log_every=1)
    run = tmp_path / "run"
    res = train_stage(periodic, run, cfg, 1, progress=False)
    assert res["steps"] == 40 and res["stopped"] == "max_steps"
    curve = losses(run, 1)
    assert sorted(curve) == list(range(1, 41))
    first, last = np.mean([curve[i] for i in (1, 2, 3)]), np.mean([curve[i] for i in (38, 39, 40)])
    assert last < 0.5 * first and last < 2.0, curve
    assert res["best_valid_bits"] < 2.0
    # run folder (DESIGN 7)
    assert (run / "config.yaml").is_file()
    meta = json.loads((run / "stages/1/model.json").read_text())
    extra = meta["extra"]
    assert extra["genres"] == ["alpha", "beta"] and extra["rate"] == 2000 and extra["step"] == res["best_step"]
    assert extra["valid_bits"] == pytest.approx(res["best_valid_bits"])
    assert (run / "stages/1/model.safetensors").is_file()
    assert [s for s, _ in list_checkpoints(run, 1)] == [30, 40]  # keep_checkpoints=2
    ck = run / "checkpoints/stage1/step-40"
    assert (ck / "model.safetensors").is_file() and (ck / "optimizer.bin").is_file()
    assert not list((run / "checkpoints/stage1").glob(".tmp*"))
    assert list((run / "logs/stage1").glob("events.out.tfevents*"))
    rows = read_metrics(run, 1)
    assert rows[0]["step"] == 0 and "stage1/valid_bits" in rows[0]  # the least-squares start is validated
    assert {"stage1/loss", "stage1/lr", "stage1/grad_norm", "stage1/samples_per_second"} <= set(rows[1])
    assert sum("stage1/valid_bits" in r for r in rows) >= 2
    assert json.loads((run / "metrics/stage1_result.json").read_text())["steps"] == 40
    # the exported stage loads without pickles and matches the run's rates
    from models import load_stage

    stage = load_stage(run / "stages/1")
    assert stage.rate == 2000 and stage.factor == 2


@pytest.mark.parametrize("key", ["linear_input_noise", "train_input_noise"])
def test_input_noise_trains_a_fine_stage_and_is_recorded(periodic, tmp_path, key):
    """stages[1].linear_input_noise: the least-squares start as a ridge (a lower own-past noise gain than a clean
    start); train_input_noise: the training input through noise.  The stage still learns either way, and its
    model.json says how it was trained."""
    gains = {}
    for share in (0.0, 1.0):
        cfg = tiny_train_config(max_steps=30, checkpoint_every=30, log_every=1)
        cfg = dataclasses.replace(cfg, stages=[cfg.stages[0], dataclasses.replace(cfg.stages[1], **{key: share})])
        run = tmp_path / f"run{share}"
        res = train_stage(periodic, run, cfg, 1, progress=False)
        assert res["steps"] == 30
        curve = losses(run, 1)
        assert np.mean([curve[i] for i in (28, 29, 30)]) < np.mean([curve[i] for i in (1, 2, 3)]), curve
        training = json.loads((run / "stages/1/model.json").read_text())["extra"]["training"]
        assert training == {"linear_input_noise": 0.0, "train_input_noise": 0.0, "opening_share": 0.0,
                            "entry_share": 0.0, key: share}
        from models import load_stage

        a = load_stage(run / "stages/1").linear.past_weight.detach().double()
        gains[share] = float((1 + (a**2).sum()).sqrt())
    if key == "linear_input_noise":
        assert gains[1.0] < gains[0.0], gains


def test_exact_resume(periodic, tmp_path):
    """2N steps in one go == N steps, then a new train_stage(resume=True) to 2N."""
    cfg = tiny_train_config(max_steps=12, eval_every=6, checkpoint_every=6, log_every=1)
    one, two = tmp_path / "one", tmp_path / "two"
    train_stage(periodic, one, cfg, 0, progress=False)
    first = train_stage(periodic, two, cfg, 0, max_steps=6, progress=False)
    assert first["steps"] == 6
    second = train_stage(periodic, two, cfg, 0, max_steps=12, resume=True, progress=False)
    assert second["steps"] == 12
    a, b = losses(one, 0), losses(two, 0)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    wa, wb = load_file(one / "stages/0/model.safetensors"), load_file(two / "stages/0/model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)
    ra = json.loads((one / "metrics/stage0_result.json").read_text())
    assert second["best_valid_bits"] == pytest.approx(ra["best_valid_bits"], rel=1e-5)


def test_budget_stops_cleanly_and_mixed_precision_falls_back(periodic, tmp_path, capsys):
    cfg = tiny_train_config(max_steps=100000, mixed_precision="bf16")
    run = tmp_path / "run"
    res = train_stage(periodic, run, cfg, 0, max_minutes=0.02)
    assert res["stopped"] == "max_minutes" and 0 < res["steps"] < 100000
    assert (run / "stages/0/model.safetensors").is_file()
    assert list_checkpoints(run, 0)[-1][0] == res["steps"]
    err = capsys.readouterr().err
    assert "full precision" in err and "budget" in err and "eta" in err


def test_end_class_batches():
    B, W = 4, 10
    batch = {"x": torch.full((B, W), 5), "genre": torch.zeros(B, dtype=torch.long),
             "has_roll": torch.ones(B, dtype=torch.bool), "roll": torch.zeros(B, 256, 1)}
    ends = EndCrops.__new__(EndCrops)
    ends.items = [{"x": torch.full((W,), 9), "roll": torch.ones(256, 1), "has_roll": False, "genre": torch.tensor(1)}]
    gen = torch.Generator().manual_seed(0)
    out = insert_end_crops(batch, ends, gen, end_code=256)
    assert out["x"].shape == (B, W + 1)
    is_end = out["end_mask"]
    for i in range(B):
        if is_end[i]:  # the track's tail, then END as the last target
            assert out["x"][i, :W].eq(9).all() and out["x"][i, W] == 256 and out["genre"][i] == 1
            assert not out["has_roll"][i]
        else:
            assert out["x"][i, :W].eq(5).all() and out["x"][i, W] == 128
    w = loss_weights(B, W + 1, 3, W, is_end)
    assert w[:, :3].sum() == 0 and w[:, 3:W].eq(1).all()
    assert torch.equal(w[:, W], is_end.float())
    # over many draws about END_PROB of the examples end the piece
    gen = torch.Generator().manual_seed(1)
    share = np.mean([insert_end_crops(dict(batch, x=torch.full((B, W), 5)), ends, gen, 256)["end_mask"].float().mean()
                     for _ in range(200)])
    assert 0.08 < share < 0.17


def test_opening_batches():
    """Openings replace about ``share`` of the rows and are scored from their first sample."""
    B, W = 4, 10
    batch = {"x": torch.full((B, W), 5), "genre": torch.zeros(B, dtype=torch.long),
             "has_roll": torch.ones(B, dtype=torch.bool), "roll": torch.zeros(B, 256, 1)}
    openings = OpeningCrops.__new__(OpeningCrops)
    openings.items = [{"x": torch.full((W,), 7), "roll": torch.ones(256, 1), "has_roll": False,
                       "genre": torch.tensor(1)}]
    out = insert_opening_crops(batch, openings, 0.5, torch.Generator().manual_seed(0))
    is_open = out["open_mask"]
    assert 0 < int(is_open.sum()) < B  # this seed: some rows of each kind
    for i in range(B):
        assert out["x"][i].eq(7 if is_open[i] else 5).all()
        assert bool(out["has_roll"][i]) is not bool(is_open[i])
    w = loss_weights(B, W, 3, W, None, is_open)
    assert torch.equal(w[:, :3].sum(1) > 0, is_open) and w[:, 3:].eq(1).all()
    gen = torch.Generator().manual_seed(1)
    share = np.mean([insert_opening_crops(dict(batch), openings, 0.25, gen)["open_mask"].float().mean()
                     for _ in range(200)])
    assert 0.18 < share < 0.32
    none = insert_opening_crops(dict(batch, x=torch.full((B, W), 5)), openings, 0.0, gen)
    assert not none["open_mask"].any() and none["x"].eq(5).all()


def _stage_with_share(data: Path, tmp_path: Path, key: str, share: float):
    """(exported stage 0, its config, its crop geometry): a 1 kHz stage 0 trained 60 steps (the same seed) with
    stage config ``key`` at ``share``; its model.json records the share."""
    from models import load_stage
    from pipeline.corpus.batches import crop_geometry

    cfg = tiny_train_config(rates=(1000,), max_steps=60, eval_every=60, checkpoint_every=60, end_class=False,
                            history=False)
    cfg = dataclasses.replace(cfg, stages=[dataclasses.replace(cfg.stages[0], **{key: share})])
    run = tmp_path / f"{key}{share}"
    train_stage(data, run, cfg, 0, progress=False)
    assert json.loads((run / "stages/0/model.json").read_text())["extra"]["training"][key] == share
    stage = load_stage(run / "stages/0").eval()
    return stage, cfg, crop_geometry(cfg, 0, stage)


def _bits(stage, batch: dict, cfg) -> torch.Tensor:
    """Bits per sample (B, T) of stage 0 on ``batch``, no dropout."""
    from pipeline.corpus.batches import model_inputs, model_x

    with torch.no_grad():
        cond = model_inputs(batch, cfg, 0, 2, None, drop=False)
        x = model_x(batch["x"], stage.head, cfg.data.mu_bits)
        return stage.head.nll_bits(stage(x, cond), x)


def test_opening_crops_teach_a_stage_to_start_from_nothing(periodic, tmp_path):
    """A generated piece starts from nothing, which random crops never score.  Trained with
    ``opening_share`` (the same steps and seed), stage 0 predicts the tracks' openings (the receptive-field
    part of the training tracks' first windows: samples a random crop never scores) in fewer bits (a margin of
    0.2 bits; measured here: 1.59 -> 1.26)."""
    from pipeline.corpus.dataset import track_openings

    bits = {}
    for share in (0.0, 0.5):
        stage, cfg, geo = _stage_with_share(periodic, tmp_path, "opening_share", share)
        items = track_openings(periodic, cfg, 0, "train", geo.window)
        batch = {key: torch.stack([torch.as_tensor(it[key]) for it in items]) for key in ("x", "roll", "genre")}
        batch["has_roll"] = torch.tensor([bool(it["has_roll"]) for it in items])
        bits[share] = float(_bits(stage, batch, cfg)[:, : geo.context].mean())
    assert bits[0.5] < bits[0.0] - 0.2, bits


def test_silence_context_batches():
    """About ``share`` of the rows get a silent left context (the silence code), the kept rows and every
    crop stay as they were, and share 0 draws nothing from the generator."""
    B, W, C = 64, 10, 4
    x = torch.arange(B * W).reshape(B, W) % 7 + 1
    keep = torch.zeros(B, dtype=torch.bool)
    keep[:8] = True
    batch = {"x": x.clone()}
    rows = silence_context(batch, 0.5, C, 8, torch.Generator().manual_seed(0), keep=keep)
    assert 16 < int(rows.sum()) < 48 and not rows[:8].any()
    assert batch["x"][rows, :C].eq(128).all() and torch.equal(batch["x"][~rows], x[~rows])
    assert torch.equal(batch["x"][:, C:], x[:, C:])
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    assert not silence_context({"x": x.clone()}, 0.0, C, 8, gen).any()
    assert torch.equal(gen.get_state(), state)


def test_entry_crops_teach_a_stage_to_leave_silence_where_notes_sound(periodic, tmp_path):
    """Random crops never show a silent past under a sounding score, so a stage has not learnt what comes
    after one (where a generated piece starts, or where it is caught in silence).  Trained with
    ``entry_share`` (the same steps and seed), stage 0 predicts the first 20 samples of training crops whose
    left context is silence in fewer bits (a margin of 0.2 bits; measured here: 5.38 -> 5.00)."""
    from torch.utils.data import default_collate

    from pipeline.corpus.dataset import StageCrops

    bits = {}
    for share in (0.0, 0.5):
        stage, cfg, geo = _stage_with_share(periodic, tmp_path, "entry_share", share)
        ds = StageCrops(periodic, cfg, 0, split="train", context=geo.context, seed=5, length=16, margin=geo.margin)
        batch = default_collate([ds[i] for i in range(16)])
        silence_context(batch, 1.0, geo.context, cfg.data.mu_bits, torch.Generator().manual_seed(0))
        bits[share] = float(_bits(stage, batch, cfg)[:, geo.context : geo.context + 20].mean())
    assert bits[0.5] < bits[0.0] - 0.2, bits


def _cut(batch: dict, cfg, k: int, n: int) -> dict:
    """below / roll of a batch ending at stage sample n, without cond_len (as crops had no margin)."""
    rates = cfg.data.rates
    out = {key: v for key, v in batch.items() if key != "cond_len"}
    if "below" in out:
        out["below"] = out["below"][:, : n * rates[k - 1] // rates[k]]
    out["roll"] = out["roll"][:, :, : n * cfg.data.roll_fps // rates[k]]
    return out


@pytest.mark.parametrize("k", [0, 1])
def test_crop_ends_see_the_lookahead_like_a_longer_window(periodic, k):
    """A crop's last positions see the tier below / roll exactly as a longer window does (as in
    evaluation); a track's last crop sees them missing past the end.  Without the right margin the
    last positions differ."""
    from torch.utils.data import default_collate

    from models import build_stage
    from pipeline.corpus.batches import alignment_unit, model_inputs, round_up
    from pipeline.corpus.dataset import StageCrops

    cfg = tiny_train_config()
    torch.manual_seed(0)
    model = build_stage(cfg, k, n_genres=2).eval()
    unit = alignment_unit(cfg, k)
    context, margin = round_up(model.receptive_field, unit), round_up(model.lookahead, unit)
    assert margin >= model.lookahead > 0
    ds = StageCrops(periodic, cfg, k, context=context, seed=0, length=4, margin=margin)
    W = ds.window

    def run(batch: dict) -> torch.Tensor:
        return model(batch["x"], model_inputs(batch, cfg, k, 2, None, drop=False))

    batch = default_collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        out = run(batch)
        for i in range(len(ds)):
            pos, start = ds.locate(i)
            n = ds.data.samples(ds.tracks[pos])
            longer = ds.data.item(ds.tracks[pos], start, min(W + 4 * unit, (n - start) // unit * unit))
            torch.testing.assert_close(out[i], run(default_collate([longer]))[0, :, :W], rtol=1e-5, atol=1e-5)
        assert (run(_cut(batch, cfg, k, W))[:, :, W - 1] - out[:, :, W - 1]).abs().max() > 1e-4
        end = default_collate(EndCrops(periodic, cfg, k, W, margin).items)  # the real end: nothing past it
        assert (end["cond_len"] == W).all() and end["roll"].shape[1:] == batch["roll"].shape[1:]  # padded alike
        torch.testing.assert_close(run(end), run(_cut(end, cfg, k, W)), rtol=1e-5, atol=1e-5)


def test_schedule():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.05)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.05 + 0.95 * 0.5) and f(110) == pytest.approx(0.05) and f(500) == pytest.approx(0.05)


def test_clear_errors(periodic, tmp_path):
    cfg = tiny_train_config(max_steps=2, eval_every=2, checkpoint_every=2)
    with pytest.raises(DatasetError, match="manifest"):
        train_stage(tmp_path / "nowhere", tmp_path / "r0", cfg, 0, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"version": 1, "tracks": []}))
    with pytest.raises(DatasetError, match="no tracks"):
        train_stage(empty, tmp_path / "r1", cfg, 0, progress=False)
    one_rate = make_dataset(tmp_path / "one", "periodic", rates=(1000,), seconds=1.0)
    with pytest.raises(DatasetError, match="2000 Hz"):
        train_stage(one_rate, tmp_path / "r2", cfg, 1, progress=False)
    with pytest.raises(ConfigError, match="stage 5"):
        train_stage(periodic, tmp_path / "r3", cfg, 5, progress=False)
    long_crop = tiny_train_config(crop=4000)
    with pytest.raises(DatasetError, match="longer than every track"):
        train_stage(periodic, tmp_path / "r4", long_crop, 0, progress=False)
    with pytest.raises(RunError, match="no checkpoint"):
        train_stage(periodic, tmp_path / "r5", cfg, 0, resume=True, progress=False)
    run = tmp_path / "r6"
    train_stage(periodic, run, cfg, 0, progress=False)
    with pytest.raises(RunError, match="already has checkpoints"):  # nothing written is lost
        train_stage(periodic, run, cfg, 0, progress=False)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5))
    with pytest.raises(RunError, match=r"train \(lr\)"):
        train_stage(periodic, run, other, 0, resume=True, progress=False)
    other_stage = tiny_train_config(max_steps=2, eval_every=2, checkpoint_every=2, crop=100)
    with pytest.raises(RunError, match=r"stages\[0\]"):
        train_stage(periodic, run, other_stage, 0, resume=True, progress=False)


def test_script_entry_error_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pipeline.training", "--data", str(tmp_path / "none"), "--run",
                        str(tmp_path / "run"), "--stage", "0"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: ") and "manifest" in p.stderr


def test_two_cpu_processes_with_accelerate_launch(periodic, tmp_path):
    cfg = tiny_train_config(max_steps=20, eval_every=10, checkpoint_every=10, log_every=2)
    save_config(cfg, tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "pipeline.training", "--data", str(periodic),
           "--run", str(run), "--stage", "1", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((run / "metrics/stage1_result.json").read_text())
    assert res["processes"] == 2 and res["steps"] == 20
    assert [s for s, _ in list_checkpoints(run, 1)] == [10, 20]
    ck = run / "checkpoints/stage1/step-20"
    names = {f.name for f in ck.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"} <= names
    assert (run / "stages/1/model.safetensors").is_file()
    assert len(list((run / "logs/stage1").glob("events.out.tfevents*"))) == 1  # only the main process logs
    curve = losses(run, 1)
    # the linear path starts near the linear predictor, so the network's gain is what falls
    first, last = [curve[s] for s in (2, 4, 6)], [curve[s] for s in (16, 18, 20)]
    assert len(curve) == 10 and sum(last) / 3 < sum(first) / 3 - 0.3, curve


def test_a_budget_stops_the_run_but_leaves_the_cosine_to_the_configured_steps(periodic, tmp_path, capsys):
    """A wall-clock budget that binds first is reported (the steps it allows) and stops the run, but the
    learning rate follows the configured cosine throughout: step k trains the same on a fast or slow machine."""
    cfg = tiny_train_config(max_steps=100000)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, log_every=1))
    run = tmp_path / "run"
    res = train_stage(periodic, run, cfg, 0, max_minutes=0.25)
    assert res["stopped"] == "max_minutes" and 20 < res["steps"] < 100000, res
    rows = read_metrics(run, 0)
    allowed = [r["stage0/budget_steps"] for r in rows if "stage0/budget_steps" in r]
    assert len(allowed) == 1 and 20 < allowed[0] < 100000
    cosine = WarmupCosine(cfg.train.warmup_steps, 100000, cfg.train.min_lr_ratio)
    lrs = {r["step"]: r["stage0/lr"] for r in rows if "stage0/lr" in r}
    for step in (21, res["steps"]):  # the scheduler's lr after ``step`` updates
        assert lrs[step] == pytest.approx(cfg.train.lr * cosine(step), rel=1e-6), step
    assert "the wall-clock budget allows about" in capsys.readouterr().err
