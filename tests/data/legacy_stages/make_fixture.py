"""Wrote the legacy-stage fixture with the code of commit 8cafafd (before issue 9's models/ refactor);
mixture/model.json was then stripped of linear_order / linear_below / adaptive_scale, as the oldest files lack them.

Kept for the record: it uses the old keyword API (``Stage(dict, ...)``, ``stage(x, genre=..., below=...)``,
``stage.streaming(batch, genre=..., ...)``) and is not expected to run against later code.
tests/test_models_legacy.py loads these folders with the current code and asserts
bitwise-identical logits (full pass, dropped conditioning, per-row cond_len, streaming).

    .venv/bin/python tests/data/legacy_stages/make_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from models import Stage, save_stage

HERE = Path(__file__).resolve().parent
RATE, FACTOR, FPS, CLASSES, GENRES, T, B = 800, 4, 100, 32, 3, 96, 2
SMALL = {
    "residual_channels": 8, "gate_channels": 8, "skip_channels": 8, "kernel_size": 2,
    "dilation_cycles": 2, "cycle_length": 4,
    "conditioning": {"channels": 8, "layers": 2, "kernel_size": 3, "lookahead": 2},
    "history": {"enabled": False, "pool": 4, "channels": 8, "layers": 3, "kernel_size": 2},
}
KINDS = {
    # stage 0: categorical + linear path (adaptive) + score taps + history + roll + genre + end class
    "coarse_score": (0, {**SMALL, "rate": RATE, "use_genre": True, "use_roll": True, "use_tier_below": False,
                         "end_class": True, "linear_order": 16, "linear_below": 4, "adaptive_scale": True,
                         "history": {**SMALL["history"], "enabled": True},
                         "score": {"enabled": True, "bandwidth_hz": 1.0, "floor": 1e-3, "rolloff": 1.0}}),
    # stage 1: categorical + linear path with below taps and fallback + tier below + roll + genre, kernel 3
    "fine_below": (1, {**SMALL, "rate": RATE, "kernel_size": 3, "use_genre": True, "use_roll": True,
                       "use_tier_below": True, "linear_order": 16, "linear_below": 4, "adaptive_scale": True}),
    # stage 1: logistic mixture + tier below + history + genre; an old-style model.json (no linear keys)
    "mixture": (1, {**SMALL, "rate": RATE, "head": "logistic_mixture", "mixtures": 3, "use_genre": True,
                    "use_roll": False, "use_tier_below": True, "history": {**SMALL["history"], "enabled": True}}),
}


def main() -> None:
    torch.set_num_threads(1)  # as the tests run (one_thread): bitwise equality needs the same reductions
    for name, (index, cfg) in KINDS.items():
        torch.manual_seed(hash(name) % 1000)
        st = Stage(cfg, index=index, n_genres=GENRES, factor=FACTOR if index else 1, roll_fps=FPS, classes=CLASSES)
        with torch.no_grad():
            for pname, p in st.named_parameters():
                if pname.endswith("bias") or p.dim() == 1:
                    p.normal_(0, 0.3)
        st.eval()
        folder = HERE / name
        save_stage(st, folder, extra={"genres": ["a", "b", "c"]})
        g = torch.Generator().manual_seed(7)
        if st.head_kind == "categorical":
            x = torch.randint(0, CLASSES, (B, T), generator=g)
        else:
            x = torch.rand(B, T, generator=g) * 2 - 1
        inp = {
            "x": x,
            "genre": torch.tensor([0, GENRES]),
            "below": torch.randint(0, CLASSES, (B, T // FACTOR), generator=g),
            "roll": (torch.rand(B, 256, T * FPS // RATE, generator=g) > 0.8).float(),
            "drop_below": torch.tensor([True, False]),
            "drop_roll": torch.tensor([False, True]),
            "drop_history": torch.tensor([True, False]),
            "cond_len": torch.tensor([T, T // 2]),
        }
        below = inp["below"] if index else None
        with torch.no_grad():
            full = st(x, genre=inp["genre"], below=below, roll=inp["roll"])
            dropped = st(x, genre=inp["genre"], below=below, roll=inp["roll"], drop_below=inp["drop_below"],
                         drop_roll=inp["drop_roll"], drop_history=inp["drop_history"])
            bare = st(x)
            by_len = st(x, genre=inp["genre"], below=below, roll=inp["roll"], cond_len=inp["cond_len"])
            steps = []
            with st.streaming(batch=B, genre=inp["genre"], below=below, roll=inp["roll"],
                              drop_below=inp["drop_below"], drop_roll=inp["drop_roll"],
                              drop_history=inp["drop_history"], chunk=32) as s:
                prev = torch.full((B,), st.start_code) if st.head_kind == "categorical" else torch.zeros(B)
                for t in range(T):
                    steps.append(s.step(prev))
                    prev = x[:, t]
            stream = torch.stack(steps, dim=2)
        out = {"full": full, "dropped": dropped, "bare": bare, "by_len": by_len, "stream": stream}
        save_file({**{f"in.{k}": v.contiguous() for k, v in inp.items()},
                   **{f"out.{k}": v.contiguous() for k, v in out.items()}}, str(folder / "io.safetensors"))
        print(name, {k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()
