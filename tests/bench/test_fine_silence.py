"""bench/fine_silence.py: a fine stage drawn over a tier below as quiet as a release's end, floor by floor."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from fine_silence import TAIL_CODES, main, stage_over_silence
from tests.helpers_run import make_run, tiny_config


def test_a_fine_stage_over_silence_is_louder_with_a_higher_floor(tmp_path):
    """A stage with an adaptive scale draws its hiss at a level its floor sets: floor 0.05 louder than 1e-5 (the
    second half of 2000 samples, the same seed), codes around silence with the low floor; the script writes
    every fine stage's row, not stage 0."""
    import torch

    from models.checkpoint import load_stage

    cfg = tiny_config(stage0={"linear_order": 16, "adaptive_scale": True})
    fine = dataclasses.replace(cfg.stages[1], linear_order=16, linear_below=4, adaptive_scale=True)
    run = make_run(tmp_path, cfg=dataclasses.replace(cfg, stages=(cfg.stages[0], fine)))
    torch.set_num_threads(1)
    stage = load_stage(run / "stages" / "1").eval()
    with torch.no_grad():  # flat network logits, no taps (mu 0) and a multiplier k = 0.3 of the adaptive scale:
        for p in (stage.linear.past_weight, stage.linear.below_weight, stage.linear.fallback_weight):  # the floor
            p.zero_()  # decides
        stage.out2.weight.zero_()
        stage.out2.bias.zero_()
        stage.lin_out.weight.zero_()
        stage.lin_out.bias.copy_(torch.tensor([0.0, math.log(0.3)]))
    below = np.random.default_rng(0).choice(TAIL_CODES, size=1000)
    loud = stage_over_silence(stage, below, 1.0, 0.0, 0.05, seed=1)
    quiet = stage_over_silence(stage, below, 1.0, 0.0, 1e-5, seed=1)
    assert loud["level_db"] > quiet["level_db"] + 6.0, (loud, quiet)
    assert main(["--run", str(run), "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert list(out["stages"]) == ["1"] and len(out["stages"]["1"]["draws"]) == 3
