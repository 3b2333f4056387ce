"""Stage folders written before issue 9's models/ refactor load with today's code: full pass, dropped
conditioning, no conditioning, per-row cond_len and streaming
(tests/data/legacy_stages/make_fixture.py wrote them; mixture/model.json has no linear keys).

Two claims, two comparisons:

- On this machine, the loaded folder computes exactly what a stage freshly built with today's API
  from the intended architecture (make_fixture.py's, written out below) computes with the same
  weights: bitwise, because both run the same kernels here.
- Against the logits recorded when the fixture was written (on another machine: float kernels
  differ between CPUs; an Intel Xeon differs from the AMD EPYC that wrote them by up to 9.5e-7),
  within ``RTOL``/``ATOL``, far below what a change of the network's computation gives (checked:
  dropping the conditioning moves the logits by more than ``SENSITIVITY`` times the tolerance).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import Stage, load_stage, load_state_dict

HERE = Path(__file__).resolve().parents[1] / "data" / "legacy_stages"
RTOL, ATOL = 1e-5, 1e-5  # recorded vs recomputed logits (|logits| up to ~10): 10x the largest CPU difference seen
SENSITIVITY = 100  # a real change (dropped conditioning) must move the logits by this many tolerances

SMALL = {
    "residual_channels": 8, "gate_channels": 8, "skip_channels": 8, "kernel_size": 2,
    "dilation_cycles": 2, "cycle_length": 4,
    "conditioning": {"channels": 8, "layers": 2, "kernel_size": 3, "lookahead": 2},
    "history": {"enabled": False, "pool": 4, "channels": 8, "layers": 3, "kernel_size": 2},
}
HISTORY = {**SMALL["history"], "enabled": True}
INTENDED = {  # name -> (index, factor, today's architecture of the folder), as make_fixture.py built it
    "coarse_score": (0, 1, {**SMALL, "rate": 800, "use_genre": True, "use_roll": True, "use_tier_below": False,
                            "end_class": True, "linear_order": 16, "linear_below": 4, "adaptive_scale": True,
                            "history": HISTORY,
                            "score": {"enabled": True, "bandwidth_hz": 1.0, "floor": 1e-3, "rolloff": 1.0}}),
    "fine_below": (1, 4, {**SMALL, "rate": 800, "kernel_size": 3, "use_genre": True, "use_roll": True,
                          "use_tier_below": True, "linear_order": 16, "linear_below": 4, "adaptive_scale": True}),
    # the oldest model.json lacks the linear keys: they mean "off"
    "mixture": (1, 4, {**SMALL, "rate": 800, "head": "logistic_mixture", "mixtures": 3, "use_genre": True,
                       "use_roll": False, "use_tier_below": True, "history": HISTORY,
                       "linear_order": 0, "linear_below": 0, "adaptive_scale": False}),
}


def _fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(inputs, recorded outputs) of one folder."""
    io = load_file(str(HERE / name / "io.safetensors"))
    return ({k[3:]: v for k, v in io.items() if k.startswith("in.")},
            {k[4:]: v for k, v in io.items() if k.startswith("out.")})


def _outputs(st: Stage, i: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The five computations the fixture recorded (logits or mixture parameters)."""
    x, b = i["x"], i["x"].shape[0]
    below = i["below"] if st.index else None
    drops = {k: i[k] for k in ("drop_below", "drop_roll", "drop_history")}
    with torch.no_grad():
        got = {
            "full": st(x, genre=i["genre"], below=below, roll=i["roll"]),
            "dropped": st(x, genre=i["genre"], below=below, roll=i["roll"], **drops),
            "bare": st(x),
            "by_len": st(x, genre=i["genre"], below=below, roll=i["roll"], cond_len=i["cond_len"]),
        }
        steps = []
        with st.streaming(batch=b, genre=i["genre"], below=below, roll=i["roll"], chunk=32, **drops) as s:
            prev = torch.full((b,), st.start_code) if not x.is_floating_point() else torch.zeros(b)
            for t in range(x.shape[1]):
                steps.append(s.step(prev))  # (B, C)
                prev = x[:, t]
        got["stream"] = torch.stack(steps, dim=2)  # (B, C, T)
    return got


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_legacy_folder_equals_a_fresh_stage_bitwise(name):
    """Same machine, same kernels: the legacy folder is read as the intended architecture, exactly."""
    index, factor, arch = INTENDED[name]
    fresh = Stage(arch, index=index, n_genres=3, factor=factor, roll_fps=100, classes=32)
    fresh.load_state_dict(load_state_dict(HERE / name / "model.safetensors"), strict=True)
    fresh.eval()
    inputs, _ = _fixture(name)
    legacy, want = _outputs(load_stage(HERE / name), inputs), _outputs(fresh, inputs)
    for key in want:
        assert torch.equal(legacy[key], want[key]), f"{name}: {key} differs from a freshly built stage"


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_legacy_folder_matches_recorded_logits(name):
    """Across machines: today's outputs equal the recorded ones within RTOL/ATOL."""
    inputs, recorded = _fixture(name)
    got = _outputs(load_stage(HERE / name), inputs)
    assert set(got) == set(recorded)
    for key, out in got.items():
        torch.testing.assert_close(out, recorded[key], rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{name}: {k}: {m}")
    # the tolerance can see a change of computation: dropped conditioning moves the logits far beyond it
    moved = (recorded["dropped"] - recorded["full"]).abs().max()
    assert moved > SENSITIVITY * (ATOL + RTOL * recorded["full"].abs().max()), f"{name}: moved only {moved:.2e}"
