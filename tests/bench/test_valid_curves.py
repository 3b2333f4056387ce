"""bench/valid_curves.py: a run's validation curve read from its metrics, and drawn."""

from __future__ import annotations

import json

from pipeline.config import save_config
from tests.helpers_data import tiny_train_config
from valid_curves import main


def _run(root, rows):
    root.mkdir()
    save_config(tiny_train_config(), root / "config.yaml")
    (root / "metrics").mkdir()
    (root / "metrics" / "stage1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_curves_and_png(tmp_path):
    a = _run(tmp_path / "a", [{"step": 0, "stage1/valid_bits": 5.0}, {"step": 5, "stage1/loss": 4.8},
                              {"step": 150, "stage1/loss": 4.6}, {"step": 200, "stage1/valid_bits": 4.5}])
    b = _run(tmp_path / "b", [{"step": 0, "stage1/valid_bits": 5.2}])
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["--stage", "1", "--run", str(a), "--run", str(b), "--json", str(out), "--png", str(png),
                 "--baseline", "4.9"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs["a"]["valid"] == [[0, 5.0], [200, 4.5]] and runs["b"]["valid"] == [[0, 5.2]]
    assert runs["a"]["loss_per_100_steps"] == [[0, 4.8], [100, 4.6]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_score_tier_curve_is_read_from_its_own_metrics(tmp_path):
    run = tmp_path / "s"
    run.mkdir()
    save_config(tiny_train_config(), run / "config.yaml")
    (run / "metrics").mkdir()
    rows = [{"step": 0, "score/valid_bits": 8.5}, {"step": 200, "score/valid_bits": 3.9},
            {"step": 10, "score/loss": 6.0}]
    (run / "metrics" / "score.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.json"
    assert main(["--stage", "score", "--run", str(run), "--json", str(out)]) == 0
    c = json.loads(out.read_text())["runs"]["s"]
    assert c["valid"] == [[0, 8.5], [200, 3.9]] and c["loss_per_100_steps"] == [[0, 6.0]]
    assert c["max_steps"] == tiny_train_config().score_tier.max_steps
