"""Generation speed of one stage: `recompute` (full forward over the receptive-field window per
sample) vs `cached` (the streaming engine, models/streaming.py).

Reference stage: 20 layers (2 cycles of dilations 1..512), residual 64, gate 128, skip 128,
256 classes, conditioned on a tier below (factor 4).  Also the cached cost when the receptive
field doubles (cycle_length 11), which should stay flat (it grows only by the 2 added layers).

    .venv/bin/python bench/generation.py [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info  # noqa: E402  (bench/machine.py)
from models import Conditioning, Stage, stage_arch  # noqa: E402

RATE, FACTOR = 8000, 4


def reference_stage(cycle_length: int = 10, cycles: int = 2) -> Stage:
    cfg = stage_arch({"rate": RATE, "residual_channels": 64, "gate_channels": 128, "skip_channels": 128,
                      "kernel_size": 2, "dilation_cycles": cycles, "cycle_length": cycle_length,
                      "use_tier_below": True, "use_roll": False, "use_genre": True})
    torch.manual_seed(0)
    return Stage(cfg, index=1, n_genres=4, factor=FACTOR, roll_fps=100, classes=256).eval()


def _timed(step, max_steps: int, budget_s: float) -> tuple[float, float]:
    """Run ``step`` up to max_steps times or budget_s seconds -> (steps/s wall, steps/s of process CPU)."""
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while n < max_steps and (n == 0 or time.perf_counter() - t0 < budget_s):
        step()
        n += 1
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


class CachedRun:
    """A live stream of the streaming engine; ``measure`` times more of its steps."""

    def __init__(self, st: Stage, batch: int, steps: int) -> None:
        below = torch.randint(0, 256, (batch, (steps + 64) // FACTOR + 1))
        self.x = torch.full((batch,), st.start_code)
        cond = Conditioning(genre=torch.zeros(batch, dtype=torch.long), below=below)
        self.stream = st.streaming(batch, cond, chunk=4096)
        for _ in range(32):  # warm up (first conditioning chunk, allocator)
            self.stream.step(self.x)

    def measure(self, steps: int, budget_s: float) -> tuple[float, float]:
        return _timed(lambda: self.stream.step(self.x), steps, budget_s)


def bench_cached_pair(a: Stage, b: Stage, batch: int, steps: int, repeats: int = 3,
                      budget_s: float = 2.5) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best of ``repeats`` interleaved runs of two stages (fair on a noisy, shared machine)."""
    runs = [CachedRun(a, batch, steps * repeats), CachedRun(b, batch, steps * repeats)]
    best = [(0.0, 0.0), (0.0, 0.0)]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            wall, cpu = run.measure(steps, budget_s)
            best[k] = (max(best[k][0], wall), max(best[k][1], cpu))
    for run in runs:
        run.stream.close()
    return best[0], best[1]


def bench_recompute(st: Stage, batch: int, steps: int, budget_s: float = 20.0) -> tuple[float, float]:
    """Samples per second of a full forward over the receptive-field window for each sample."""
    w = -(-st.receptive_field // FACTOR) * FACTOR  # window, whole tier-below samples
    x = torch.randint(0, 256, (batch, w + steps * FACTOR))
    below = torch.randint(0, 256, (batch, x.shape[1] // FACTOR))
    cond = Conditioning(genre=torch.zeros(batch, dtype=torch.long), below=below)
    i = [0]

    def step():
        s0 = i[0] * FACTOR
        i[0] += 1
        out = st(x[:, s0:s0 + w], cond.window(s0, s0 + w, FACTOR))
        return out[:, :, -1]  # only the last position is the new sample's distribution

    with torch.no_grad():
        st(x[:, :w], cond.window(0, w, FACTOR))  # warm up
        return _timed(step, steps, budget_s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)
    q = 4 if args.quick else 1
    if args.threads:
        torch.set_num_threads(args.threads)

    st = reference_stage()
    big = reference_stage(cycle_length=11)  # receptive field doubled
    rows = []

    def add(engine, stage, batch, rates):
        sps, cpu_sps = rates
        rows.append({"engine": engine, "batch": batch, "samples_per_second": round(sps, 2),
                     "batch_samples_per_second": round(sps * batch, 1),
                     "samples_per_cpu_second": round(cpu_sps, 2), "threads": torch.get_num_threads(),
                     "receptive_field": stage.receptive_field, "layers": stage.n_layers,
                     "microseconds_per_sample": round(1e6 / sps, 2)})

    add("recompute", st, 1, bench_recompute(st, 1, 24 // q))
    add("recompute", st, 64, bench_recompute(st, 64, max(1, 3 // q)))
    c1, big1 = bench_cached_pair(st, big, 1, 1500 // q)
    c64, big64 = bench_cached_pair(st, big, 64, 300 // q)
    add("cached", st, 1, c1)
    add("cached", st, 64, c64)
    add("cached", big, 1, big1)
    add("cached", big, 64, big64)

    def sps(engine, stage, batch):
        return next(r["samples_per_second"] for r in rows if r["engine"] == engine and r["batch"] == batch
                    and r["receptive_field"] == stage.receptive_field)

    summary = {
        "cached_over_recompute_batch1": round(sps("cached", st, 1) / sps("recompute", st, 1), 1),
        "cached_over_recompute_batch64": round(sps("cached", st, 64) / sps("recompute", st, 64), 1),
        "cached_cost_ratio_rf_doubled_batch1": round(sps("cached", st, 1) / sps("cached", big, 1), 3),
        "cached_cost_ratio_rf_doubled_batch64": round(sps("cached", st, 64) / sps("cached", big, 64), 3),
        "cached_cpu_cost_ratio_rf_doubled_batch1": round(c1[1] / big1[1], 3),
        "layers_ratio_rf_doubled": big.n_layers / st.n_layers,
    }
    report = {
        "machine": machine_info(),
        "stage": {"layers": st.n_layers, "residual_channels": 64, "gate_channels": 128, "skip_channels": 128,
                  "classes": 256, "factor": FACTOR, "receptive_field": st.receptive_field,
                  "params": st.n_params},
        "flops_per_sample": st.flops_per_sample(),
        "flops_per_sample_rf_doubled": big.flops_per_sample(),
        "results": rows,
        "summary": summary,
    }
    print(f"flops/sample {st.flops_per_sample():.3g} (RF {st.receptive_field}); "
          f"{big.flops_per_sample():.3g} (RF {big.receptive_field})  threads={torch.get_num_threads()}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"(a busy machine slows the wall-clock rates)")
    print(f"{'engine':<10}{'batch':>6}{'RF':>7}{'layers':>7}{'samples/s':>12}{'batch samples/s':>17}"
          f"{'us/sample':>11}{'samples/cpu-s':>15}")
    for r in rows:
        print(f"{r['engine']:<10}{r['batch']:>6}{r['receptive_field']:>7}{r['layers']:>7}"
              f"{r['samples_per_second']:>12.1f}{r['batch_samples_per_second']:>17.1f}"
              f"{r['microseconds_per_sample']:>11.1f}{r['samples_per_cpu_second']:>15.1f}")
    for k, v in summary.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.json.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
