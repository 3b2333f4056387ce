"""bench/training_summary.py: a run's training results kept, its loss curves drawn from its own metrics."""

from __future__ import annotations

import json

from pipeline.config import save_config
from pipeline.run import loss_plot_path, result_path
from tests.helpers_data import tiny_train_config
from training_summary import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_curves_come_from_the_metrics_not_a_stale_plot(tmp_path):
    """A stage retrained by ``python -m pipeline.training`` leaves the train flow's ``metrics/loss.png`` as it was:
    the summary draws the curves again, so two runs with other metrics give other plots, whatever that file holds."""
    outs = []
    for name, bits in (("a", [5.0, 4.5]), ("b", [5.2, 3.9])):
        run = tmp_path / name
        (run / "metrics").mkdir(parents=True)
        save_config(tiny_train_config(), run / "config.yaml")
        rows = [{"step": 0, "stage0/valid_bits": bits[0]}, {"step": 10, "stage0/loss": bits[0] - 0.1},
                {"step": 200, "stage0/valid_bits": bits[1]}]
        (run / "metrics" / "stage0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result_path(run, 0).write_text(json.dumps({"steps": 200, "best_valid_bits": bits[1], "best_step": 200}))
        loss_plot_path(run).write_bytes(PNG + b"stale")  # the same old plot in both runs
        out = tmp_path / f"{name}.json"
        assert main(["--run", str(run), "--json", str(out)]) == 0
        assert json.loads(out.read_text())["stages"]["0"]["best_valid_bits"] == bits[1]
        assert (tmp_path / f"{name}_config.yaml").is_file()
        outs.append((tmp_path / f"{name}_loss.png").read_bytes())
    assert all(o[:8] == PNG and o != PNG + b"stale" for o in outs)
    assert outs[0] != outs[1]


def test_the_schedule_a_stage_trained_on_is_kept(tmp_path):
    """The cosine's length (fitted to a budget in older runs, else the configured steps), the steps a budget
    allowed and the learning rate at the last logged step as a share of the peak, read from the metrics."""
    cfg = tiny_train_config(max_steps=1000)
    for name, extra in (("fitted", {"stage0/schedule_steps": 300}), ("kept", {"stage0/budget_steps": 310})):
        run = tmp_path / name
        (run / "metrics").mkdir(parents=True)
        save_config(cfg, run / "config.yaml")
        rows = [{"step": 20, **extra}, {"step": 20, "stage0/lr": cfg.train.lr},
                {"step": 300, "stage0/lr": cfg.train.lr * 0.25}, {"step": 300, "stage0/valid_bits": 4.0}]
        (run / "metrics" / "stage0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result_path(run, 0).write_text(json.dumps({"steps": 300, "best_valid_bits": 4.0, "best_step": 300}))
        out = tmp_path / f"{name}.json"
        assert main(["--run", str(run), "--json", str(out)]) == 0
        got = json.loads(out.read_text())["stages"]["0"]["schedule"]
        assert got["last_lr_step"] == 300 and abs(got["last_lr_share"] - 0.25) < 1e-9
        if name == "fitted":
            assert got["cosine_steps"] == 300 and got["fitted_to_budget"] and got["budget_steps"] is None
        else:
            assert got["cosine_steps"] == 1000 and not got["fitted_to_budget"] and got["budget_steps"] == 310
