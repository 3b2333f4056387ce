"""What the fine stages draw where the music has stopped: each fine stage over a tier below as quiet as a real
release's end (about -78 dBFS: mu-law codes 127-129, one step either side of silence), sampled as the run's
``generate:`` section samples it (its temperature and tier prior), with its adaptive scale's floor as trained
(1e-3) and lowered at sampling (``Draw.adapt_floor``).  A stage that learned silence would stay near the tier
below; the level it settles at is the hiss that follows a piece's last release (README, "Scores that stop
early, and the release after the last note").

    python bench/fine_silence.py --run demo3/run --json docs/results/fine_silence.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fine_sampling import rms_db  # noqa: E402  (bench/fine_sampling.py: a signal's RMS level in dBFS)
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)

TAIL_CODES = (127, 128, 129)  # mu-law codes around silence (8 bits: 128 is 0)
TAIL_SHARE = (0.25, 0.5, 0.25)
SECONDS = 2.0
FLOORS = (0.0, 1e-4, 1e-5)  # 0: as trained


def stage_over_silence(stage, below_codes: np.ndarray, temperature: float, prior: float, floor: float,
                       seed: int) -> dict:
    """One stage's draw over ``below_codes`` (n,): its level (dBFS) and the 5-95th percentile of its codes."""
    import torch

    from models.conditioning import Conditioning
    from models.draw import Draw
    from models.sampling import sample_stage

    below = torch.from_numpy(below_codes[None].astype(np.int64))  # (1, n)
    res = sample_stage(stage, below.shape[1] * stage.factor, 1,
                       Conditioning(genre=torch.zeros(1, dtype=torch.long), below=below),
                       Draw(temperature=temperature, tier_prior=prior, adapt_floor=floor), no_genre=stage.n_genres,
                       engine="fused", generator=torch.Generator().manual_seed(seed))
    settled = res.x[0][res.x.shape[1] // 2:]  # the second half: past the start from silence
    codes = settled.numpy()
    return {"floor": floor or "as trained", "level_db": round(rms_db(stage.linear.decode(settled).numpy()), 1),
            "codes_p5_p95": [int(np.percentile(codes, 5)), int(np.percentile(codes, 95))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import torch

    from models.checkpoint import load_stage
    from pipeline.io import atomic_write_json
    from pipeline.run import read_config

    torch.set_num_threads(1)
    t0 = time.time()
    run = Path(a.run)
    g = read_config(run).generate
    stages = {}
    for folder in sorted((run / "stages").iterdir()):
        if not folder.name.isdigit() or folder.name == "0":
            continue
        stage = load_stage(folder).eval()
        k = int(folder.name)
        temperature = g.temperature * (g.stage_temperature[k] if k < len(g.stage_temperature) else 1.0)
        n_below = int(SECONDS * stage.rate // stage.factor)
        below = np.random.default_rng([a.seed, k]).choice(TAIL_CODES, size=n_below, p=TAIL_SHARE)
        below_db = round(rms_db(stage.linear.decode(torch.from_numpy(below)).numpy()), 1)
        stages[folder.name] = {"rate": int(stage.rate), "temperature": temperature, "tier_prior": g.tier_prior,
                               "tier_below_db": below_db,
                               "draws": [stage_over_silence(stage, below, temperature, g.tier_prior, f, a.seed)
                                         for f in FLOORS]}
        print(folder.name, stages[folder.name], flush=True)
    atomic_write_json(a.json, {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(),
                               "seconds": SECONDS, "stages": stages, "wall_seconds": round(time.time() - t0, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
