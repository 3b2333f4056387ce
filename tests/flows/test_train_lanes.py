"""Stages trained side by side: lane planning and per-stage budgets."""

from __future__ import annotations

import dataclasses

import pytest

from flows.train import lane_threads, plan_lanes, stage_minutes
from pipeline.config import load_config

pytestmark = pytest.mark.slow  # trains stages or runs flows


def _cfg(parallel: int, shares=(0.5, 0.25, 0.25)):
    cfg = load_config("tiny")
    stages = tuple(dataclasses.replace(s, time_share=w) for s, w in zip(cfg.stages, shares))
    return dataclasses.replace(cfg, stages=stages, train=dataclasses.replace(cfg.train, parallel_stages=parallel))


def test_two_lanes_put_the_coarse_stage_alone():
    cfg = _cfg(2)
    lanes = plan_lanes(cfg, [0, 1, 2])
    assert lanes == [[0], [1, 2]]
    minutes = [stage_minutes(cfg, k, 16, lanes) for k in range(3)]
    assert minutes == pytest.approx([16, 8, 8])  # each lane fills the 16-minute budget


def test_one_lane_splits_the_budget_by_share():
    cfg = _cfg(1)
    lanes = plan_lanes(cfg, [0, 1, 2])
    assert lanes == [[0, 1, 2]]
    assert [stage_minutes(cfg, k, 20, lanes) for k in range(3)] == pytest.approx([10, 5, 5])


def test_lanes_never_exceed_selected_stages_and_budget_holds():
    cfg = _cfg(4, shares=(0.2, 0.5, 0.3))
    lanes = plan_lanes(cfg, [1, 2])
    assert sorted(map(tuple, lanes)) == [(1,), (2,)]
    busiest = max(sum(stage_minutes(cfg, k, 10, lanes) for k in lane) for lane in lanes)
    assert busiest == pytest.approx(10)
    assert stage_minutes(cfg, 1, None, lanes) == pytest.approx(cfg.train.max_minutes)  # the config budget


@pytest.mark.parametrize("cores,lanes,threads",
                         [(16, 2, 8), (16, 3, 5), (2, 2, 1), (2, 4, 1), (1, 1, 1), (8, 0, 8), (None, 2, 1)])
def test_lane_threads_share_the_cores(monkeypatch, cores, lanes, threads):
    """Each lane gets an equal share of the cores: at least one thread; no lanes counts as one lane,
    an unknown core count as one core."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert lane_threads(_cfg(2), lanes) == threads
