"""Validation curves of one stage across runs (from each run's ``metrics/stage<k>.jsonl``), side by side.

    python bench/valid_curves.py --stage 1 --run demo_final/run_fine_long --run demo_final/run_s1res2 \\
        --json docs/results/fine_residual_taps_curves.json

``--png``: the validation curves drawn, one line per run (``--baseline B``: a dashed line at B bits, e.g. the
stage's held-out linear baseline, labelled ``--baseline-label``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import run_info  # noqa: E402  (bench/machine.py)
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import read_config  # noqa: E402


def curve(run: Path, stage: str) -> dict:
    """{"valid": [[step, bits]], "loss": [[step, mean loss of the 100 steps from step]], and for a WaveNet stage its
    score-taps config, batch and crop}.  ``stage``: an index, or "score" (the score tier: bits per event)."""
    valid, loss = [], {}
    key = "score" if stage == "score" else f"stage{stage}"
    for line in (run / "metrics" / f"{key}.jsonl").read_text().splitlines():
        d = json.loads(line)
        if f"{key}/valid_bits" in d:
            valid.append([d["step"], round(d[f"{key}/valid_bits"], 4)])
        if f"{key}/loss" in d:
            loss.setdefault(d["step"] // 100 * 100, []).append(d[f"{key}/loss"])
    cfg = read_config(run)
    out = {"valid": valid, "loss_per_100_steps": [[k, round(sum(v) / len(v), 4)] for k, v in sorted(loss.items())]}
    if stage == "score":
        return {**out, "max_steps": cfg.score_tier.max_steps, "batch_size": cfg.score_tier.batch_size}
    st = cfg.stages[int(stage)]
    return {**out, "score_taps": {"enabled": st.score.enabled, "order": st.score.order}, "batch_size": st.batch_size,
            "crop": st.crop}


def plot(out: dict, png: Path, baseline: float | None, baseline_label: str) -> None:
    """The runs' validation curves (bits per sample against steps) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in out["runs"].items():
        steps, bits = zip(*c["valid"]) if c["valid"] else ((), ())
        ax.plot(steps, bits, marker="o", markersize=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="gray", label=baseline_label)
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per event" if out["stage"] == "score" else "validation bits per sample")
    ax.set_title("score tier" if out["stage"] == "score" else f"stage {out['stage']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", required=True)
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--png", default=None)
    ap.add_argument("--baseline", type=float, default=None)
    ap.add_argument("--baseline-label", default="linear baseline")
    a = ap.parse_args(argv)
    out = {**run_info(argv and [sys.argv[0], *argv]), "stage": a.stage,
           "runs": {Path(r).name: curve(Path(r), a.stage) for r in a.run}}
    atomic_write_json(a.json, out)
    if a.png:
        plot(out, Path(a.png), a.baseline, a.baseline_label)
    for name, c in out["runs"].items():
        print(name, c["valid"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
