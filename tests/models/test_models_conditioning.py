"""models/conditioning.py: the Conditioning object (twin, window, rows, to) and its use by the stage."""

from __future__ import annotations

import torch

from models import Conditioning, Stage
from tests.helpers_models import FACTOR, FPS, GENRES, RATE, inputs, randomize_biases, stage_cfg  # noqa: F401


def _stage() -> Stage:
    torch.manual_seed(0)
    st = Stage(stage_cfg(use_genre=True, use_roll=True, use_tier_below=True, history={"enabled": True}),
               index=1, n_genres=GENRES, factor=FACTOR, roll_fps=FPS, classes=32)
    randomize_biases(st)
    return st.eval()


def test_twin_doubles_rows_with_unconditional_twins():
    g = torch.tensor([0, 1])
    below, roll = torch.randint(0, 32, (2, 10)), torch.rand(2, 256, 5)
    c = Conditioning(genre=g, below=below, roll=roll, drop_roll=torch.tensor([True, False])).twin(GENRES)
    assert c.genre.tolist() == [0, 1, GENRES, GENRES]
    assert torch.equal(c.below, torch.cat([below, below])) and torch.equal(c.roll, torch.cat([roll, roll]))
    assert c.drop_roll.tolist() == [True, False, True, True]
    assert Conditioning(genre=g, below=below).twin(GENRES).drop_roll is None  # no roll: nothing to drop
    kept = Conditioning(genre=g, below=below, roll=roll, drop_roll=torch.tensor([True, False])).twin(GENRES, True)
    assert kept.genre.tolist() == [0, 1, GENRES, GENRES]  # the genre alone dropped ...
    assert kept.drop_roll.tolist() == [True, False, True, False]  # ... each twin's roll as its stream's


def test_window_rows_to_and_keywords_agree():
    st = _stage()
    d = inputs(st, 64)
    cond = Conditioning(genre=d["genre"], below=d["below"], roll=d["roll"], drop_history=torch.tensor([True, False]))
    with torch.no_grad():
        full = st(d["x"], cond)
        assert torch.equal(full, st(d["x"], genre=d["genre"], below=d["below"], roll=d["roll"],
                                    drop_history=cond.drop_history))  # keywords set fields of cond
        torch.testing.assert_close(st(d["x"][1:], cond.rows(torch.tensor([1]))), full[1:])  # batch 1: other kernels
        assert torch.equal(st(d["x"], cond.to("cpu")), full)
    w = cond.window(8, 40, FACTOR, RATE, FPS)
    assert torch.equal(w.below, d["below"][:, 2:10]) and torch.equal(w.roll, d["roll"][:, :, 1:5])
    assert w.genre is cond.genre and w.drop_history is cond.drop_history
