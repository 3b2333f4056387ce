"""The silence trap of the adaptive scale (issue 19, item 8): a stage 0 whose network multiplier k of
the adaptive scale is below 1 / (2 ln 2) in silence (what a network learns: in training, silence goes
on) stays near silence through a note the score asks for, unless the scale has a floor where notes
sound (``score.scale_floor``).  A constructed stage: flat network logits, k fixed by the log_s bias,
a sparse score (one quiet note), both sampling engines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import Stage
from models.conditioning import Conditioning
from models.draw import Draw
from models.sampling import sample_stage
from tests.helpers_models import stage_cfg

RATE, FPS, N = 2000, 100, 4000
K_SILENT = 0.3  # the network's scale multiplier: 2 ln 2 * 0.3 = 0.42 < 1, silence is a fixed point


def trapped_stage(scale_floor: float, adapt_floor: float = 1e-3) -> Stage:
    cfg = stage_cfg(rate=RATE, use_roll=True, linear_order=16, adaptive_scale=True, end_class=False,
                    adapt_floor=adapt_floor, score={"enabled": True, "scale_floor": scale_floor})
    st = Stage(cfg, index=0, n_genres=3, roll_fps=FPS, classes=256).eval()
    with torch.no_grad():
        st.out2.weight.zero_()
        st.out2.bias.zero_()  # flat network logits: the linear path alone decides
        st.lin_out.weight.zero_()
        st.lin_out.bias.copy_(torch.tensor([0.0, math.log(K_SILENT), 1.0]))  # mu_nn, log k, score share logit
        past = torch.zeros(16)
        past[0] = 0.9
        st.linear.past_weight.copy_(past)
    return st


def sparse_quiet_score() -> torch.Tensor:
    """(1, 256, F): one middle C at velocity 32 from the first frame to the last (roll / 127)."""
    roll = torch.zeros(1, 256, N * FPS // RATE)
    roll[0, 60] = 32 / 127
    roll[0, 128 + 60, 0] = 32 / 127
    return roll


def level_db(st: Stage, engine: str, seed: int, draw: Draw | None = None) -> float:
    """Median dBFS over the 0.5 s windows of N samples of stage 0 on the score."""
    res = sample_stage(st, N, 1, Conditioning(genre=torch.zeros(1, dtype=torch.long), roll=sparse_quiet_score()),
                       draw or Draw(), no_genre=3, engine=engine,
                       generator=torch.Generator().manual_seed(seed))
    a = st.linear.decode(res.x[0]).double().numpy()
    win = a.reshape(-1, RATE // 2)
    return float(np.median(20 * np.log10(np.sqrt((win**2).mean(1)) + 1e-12)))


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_stage0_leaves_silence_where_the_score_has_notes(engine):
    torch.set_num_threads(1)
    trapped = [level_db(trapped_stage(0.0), engine, s) for s in (0, 1)]
    fixed = [level_db(trapped_stage(0.01), engine, s) for s in (0, 1)]
    # measured (x86, both engines alike): about -55 dBFS without the floor, -34 with it
    assert max(trapped) < -50.0, trapped
    assert min(fixed) > -40.0, fixed


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_a_floor_at_sampling_frees_a_stage_trained_without_one(engine):
    """Draw.note_floor (generate.scale_floor): the same floor given at sampling to the stage built without it."""
    torch.set_num_threads(1)
    freed = [level_db(trapped_stage(0.0), engine, s, Draw(note_floor=0.01)) for s in (0, 1)]
    assert min(freed) > -40.0, freed
    assert level_db(trapped_stage(0.0), engine, 0, Draw(note_floor=0.0)) < -50.0  # 0: as trained


def test_scale_floor_is_the_same_in_the_full_pass_and_both_engines():
    """Seeded generation stays deterministic and the three code paths agree: the full pass's logits
    on the sampled codes give back what the streaming engine sampled from (same argmax at T = 0)."""
    torch.set_num_threads(1)
    st = trapped_stage(0.01)
    cond = Conditioning(genre=torch.zeros(1, dtype=torch.long), roll=sparse_quiet_score())
    outs = [sample_stage(st, 600, 1, cond, Draw(temperature=0.0), no_genre=3, engine=e).x
            for e in ("reference", "fused")]
    assert torch.equal(outs[0], outs[1])
    with torch.no_grad():
        full = st(outs[0], cond).argmax(1)  # (1, T): the greedy choice at every step, teacher-forced
    assert torch.equal(full, outs[0])
    again = sample_stage(st, 600, 1, cond, no_genre=3, engine="fused", generator=torch.Generator().manual_seed(3)).x
    assert torch.equal(again, sample_stage(st, 600, 1, cond, no_genre=3, engine="fused",
                                           generator=torch.Generator().manual_seed(3)).x)


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_the_adaptive_floor_at_sampling_sets_the_level_of_the_noise_in_silence(engine):
    """Draw.adapt_floor (generate.adapt_floor): in the trap the stage sits at its fixed point
    k * floor / (1 - 2 ln 2 k), a hiss set by the adaptive scale's floor (1e-3 in training) whatever the music; a
    tenth of the floor at sampling puts it lower (> 10 dB), in both engines."""
    torch.set_num_threads(1)
    trained = [level_db(trapped_stage(0.0), engine, s) for s in (0, 1)]
    lower = [level_db(trapped_stage(0.0), engine, s, Draw(adapt_floor=1e-4)) for s in (0, 1)]
    assert max(trained) < -50.0, trained
    assert max(lower) < min(trained) - 10.0, (trained, lower)
    assert level_db(trapped_stage(0.0), engine, 0, Draw(adapt_floor=0.0)) == pytest.approx(trained[0], abs=1e-6)


def halves_db(st: Stage, engine: str, seed: int, draw: Draw) -> tuple[np.ndarray, float, float]:
    """(codes (N,), dBFS of the first half, of the second half) of stage 0 on the score."""
    res = sample_stage(st, N, 1, Conditioning(genre=torch.zeros(1, dtype=torch.long), roll=sparse_quiet_score()),
                       draw, no_genre=3, engine=engine, generator=torch.Generator().manual_seed(seed))
    a = st.linear.decode(res.x[0]).double().numpy()
    db = [float(20 * np.log10(np.sqrt((h**2).mean()) + 1e-12)) for h in (a[:N // 2], a[N // 2:])]
    return res.x[0].numpy(), db[0], db[1]


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_the_tail_floor_applies_from_the_scores_end_only(engine):
    """Draw.tail_floor (generate.tail_floor) from sample tail_from on (where the score has ended): before it the
    draw is the trained one, sample for sample (same seed); after it the stage's hiss sits > 10 dB lower, as with
    the floor everywhere; tail_from < 0 (no score) leaves the trained floor everywhere."""
    torch.set_num_threads(1)
    st = trapped_stage(0.0)
    codes, first, second = halves_db(st, engine, 0, Draw())
    t_codes, t_first, t_second = halves_db(st, engine, 0, Draw(tail_floor=1e-4, tail_from=N // 2))
    assert np.array_equal(t_codes[:N // 2], codes[:N // 2]) and t_first == pytest.approx(first, abs=1e-9)
    assert t_second < second - 10.0, (second, t_second)
    off, _, _ = halves_db(st, engine, 0, Draw(tail_floor=1e-4, tail_from=-1))
    assert np.array_equal(off, codes)


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_a_stage_trained_with_a_lower_floor_samples_with_it(engine, tmp_path):
    """The stage config's adapt_floor (1e-3 before the key): the full pass, both engines and a saved and loaded
    stage use it; a stage built with 1e-4 draws as the 1e-3 stage asked Draw(adapt_floor=1e-4) does."""
    from models.checkpoint import load_stage, save_stage

    torch.set_num_threads(1)
    low = trapped_stage(0.0, adapt_floor=1e-4)
    assert float(low.linear.adapt_scale(torch.zeros(1, 4))[0, 0]) == pytest.approx(1e-4)
    asked = level_db(trapped_stage(0.0), engine, 0, Draw(adapt_floor=1e-4))
    assert level_db(low, engine, 0) == pytest.approx(asked, abs=1e-6)
    save_stage(low, tmp_path / "s")
    assert load_stage(tmp_path / "s").linear.adapt_floor == pytest.approx(1e-4)
    from models.config import stage_arch

    with pytest.raises(ValueError, match="adapt_floor"):  # the config's check (pipeline/config.py runs it)
        stage_arch(stage_cfg(adapt_floor=0.0)).check()
