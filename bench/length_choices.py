"""The lengths a score tier's length head chooses (issue 19's length target), at several temperatures.

    python bench/length_choices.py --run demo/run --seeds 40 --json docs/results/length_choices.json

For each genre (and "no genre"), ``--seeds`` lengths drawn by ``chosen_length`` (as ``strata generate`` draws one
for a piece asked no ``--seconds``) at each temperature: the share within 0.5-2x the median length of the genre's
whole training pieces (of all of them, unconditional), the median and interquartile range of the lengths chosen (how
much they vary), and the same share for the training pieces themselves.  Only the draw of the length: whether the
tier then ends the piece there is ``bench/score_tier.py``'s ``genre_chosen`` (10 pieces, written in full).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from pipeline.io import atomic_write_json  # noqa: E402 - the repository root first (run as a script)
from pipeline.training.score_tier import chosen_length, load_score_tier, training_lengths  # noqa: E402
from score_tier import share_in_range  # noqa: E402  (bench/score_tier.py: the length target's range)


def choices(model, genre_id: int, median: float, temperature: float, seeds: int, min_seconds: float) -> dict:
    """``seeds`` lengths (s) the tier chooses for ``genre_id`` at ``temperature``, summarised against ``median``."""
    chosen = np.array([chosen_length(model, genre_id, seed, min_seconds=min_seconds, temperature=temperature)
                       for seed in range(seeds)])
    q1, q2, q3 = np.percentile(chosen, [25, 50, 75])
    return {"share_within_half_to_twice_median": round(share_in_range(chosen, median), 3),
            "median_seconds": round(float(q2), 1), "interquartile_seconds": [round(float(q1), 1), round(float(q3), 1)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--temperatures", default="1,0.7,0.5",
                    help="comma-separated temperatures of the length head's draw")
    ap.add_argument("--seeds", type=int, default=40, help="lengths drawn per genre and temperature")
    ap.add_argument("--min-seconds", type=float, default=4.0, help="as generate.score_min_seconds")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(a.run)
    loaded = load_score_tier(run)
    if loaded is None or loaded[0].left is None:
        raise SystemExit(f"{run}: no score tier with a length head")
    model, desc = loaded
    genres = list(desc["extra"]["genres"])
    temperatures = [float(t) for t in a.temperatures.split(",")]
    out: dict = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(),
                 "run_steps": desc["extra"].get("step"), "seeds": a.seeds, "temperatures": temperatures, "genres": {}}
    all_lengths = training_lengths(run, None)
    for gi, name in enumerate(genres + ["(no genre)"]):
        real = np.array(training_lengths(run, gi) if gi < len(genres) else all_lengths) if all_lengths else np.zeros(0)
        median = float(np.median(real)) if len(real) else float(np.median(all_lengths))
        out["genres"][name] = {
            "training_pieces": len(real), "median_seconds": round(median, 2),
            "training_share_within_half_to_twice_median": round(share_in_range(real, median), 3),
            "training_interquartile_seconds": [round(float(v), 1) for v in np.percentile(real, [25, 75])]
            if len(real) else None,
            "chosen": {str(t): choices(model, gi, median, t, a.seeds, a.min_seconds) for t in temperatures}}
        print(name, out["genres"][name], flush=True)
    atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
