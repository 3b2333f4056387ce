"""Stage folders written before issue 9's models/ refactor load with today's code and give
bitwise-identical logits: full pass, dropped conditioning, no conditioning, per-row cond_len and
streaming (tests/data/legacy_stages/make_fixture.py wrote them; mixture/model.json has no linear keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import load_stage

HERE = Path(__file__).resolve().parents[1] / "data" / "legacy_stages"


@pytest.mark.parametrize("name", ["coarse_score", "fine_below", "mixture"])
def test_legacy_stage_logits_bitwise(name):
    st = load_stage(HERE / name)
    io = load_file(str(HERE / name / "io.safetensors"))
    i = {k[3:]: v for k, v in io.items() if k.startswith("in.")}
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
                steps.append(s.step(prev))
                prev = x[:, t]
        got["stream"] = torch.stack(steps, dim=2)
    for key, out in got.items():
        assert torch.equal(out, io[f"out.{key}"]), f"{name}: {key} logits changed"
