"""bench/quant_cost.py's run views (a run's config with every stage's ``weights`` set) and
bench/generation.py's bytes of weights per sample in each format."""

from __future__ import annotations

import torch

from generation import reference_stage, weight_bytes_per_sample
from models.quant import QUANTIZED, quantize_stage, stage_weights
from pipeline.run import load_run, read_config
from quant_cost import run_with_weights
from tests.helpers_run import make_run


def test_run_view_loads_every_stage_in_the_format(tmp_path):
    run = make_run(tmp_path)
    view = run_with_weights(run, "int8", tmp_path / "views")
    assert [s.weights for s in read_config(view).stages] == ["int8", "int8"]
    assert [s.weights for s in read_config(run).stages] == ["float32", "float32"]  # the run is left as it was
    plain, q = load_run(run), load_run(view)
    assert [stage_weights(s) for s in q.stages] == ["int8", "int8"]
    for a, b in zip(plain.stages, q.stages):
        assert torch.equal(quantize_stage(a, "int8").out2.weight, b.out2.weight)


def test_weight_bytes_per_sample_count_the_format_used():
    st = reference_stage()
    base = weight_bytes_per_sample(st)
    convs = [m for name in QUANTIZED for m in getattr(st, name).modules() if isinstance(m, torch.nn.Conv1d)]
    n, channels = sum(m.weight.numel() for m in convs), sum(m.weight.shape[0] for m in convs)
    assert weight_bytes_per_sample(st, "float32") == base
    assert weight_bytes_per_sample(st, "bf16") == base - 2 * n
    assert weight_bytes_per_sample(st, "int8") == base - 3 * n + 4 * channels
    assert weight_bytes_per_sample(quantize_stage(st, "int8")) == base - 3 * n + 4 * channels  # the stage's own
