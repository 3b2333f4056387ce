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
