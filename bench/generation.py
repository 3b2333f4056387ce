"""Generation speed: the engines on one reference stage, and the shipped tiny cascade end to end.

1. Reference stage: 20 layers (2 cycles of dilations 1..512), residual 64, gate 128, skip 128,
   256 classes, conditioned on a tier below (factor 4) and a genre, linear path and adaptive scale
   on (as shipped).  Engines: ``recompute`` (a full forward over the receptive field per sample),
   ``cached`` (the reference streaming engine, models/streaming.py, with the reference sampling
   loop) and ``fused`` (models/fused.py), batch 1 and 64.  FLOPs per sample times samples/s is set
   against this machine's single-precision matrix-multiply rate, measured in the same run with
   the engine's threads.  Also the fused cost when the receptive field doubles (cycle_length 11).
   Each row also gives the bytes of weights a batch-1 step reads per sample, beside this machine's cache
   sizes: where they exceed L2, the step streams them from L3 for every sample (issue 22).  The fused
   engine at batch 1 also runs with the per-sample matrices in bf16 and int8 (``--weights``;
   models/quant.py, post-training: the same stage quantized), interleaved with the float32 rows so
   that the ratios come from one run; their rows give the bytes of the format used.
2. The tiny cascade (``configs/tiny.yaml``; untrained weights unless ``--run``) as ``strata generate``
   runs it (``pipeline.generation.generate.run_cascade``): a ``--seconds`` piece from a genre and a held chord,
   wall and CPU time per second of audio: the reference and the fused engine on one core
   (``STRATA_GENERATE_WORKERS=1``), the fused engine on all cores (the stages side by side), and
   ``--count 8`` (8 variations, in groups of streams on the cores) against one piece.

    .venv/bin/python bench/generation.py --json bench/results/generation.json [--quick] [--run RUN] \
        [--weights float32 bf16 int8]

Generation runs one torch thread (``STRATA_GENERATE_THREADS``); so does this benchmark unless
``--threads``.  Each rate is the median of ``--repeats`` runs, interleaved between engines.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from models import Conditioning, Stage, build_stage, save_stage, stage_arch  # noqa: E402  # noqa: E402
from models.quant import QUANTIZED, WEIGHT_FORMATS, packed_bytes, quantize_stage, stage_weights  # noqa: E402
from models.sampling import sample_stage  # noqa: E402
from pipeline.config import (
    load_config,  # noqa: E402
    save_config,  # noqa: E402
)
from pipeline.generation.generate import run_cascade  # noqa: E402
from pipeline.generation.plan import make_plan, validate_params  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import load_run  # noqa: E402
from pipeline.runtime import limited_threads  # noqa: E402
from tests.helpers_models import shipped_linear  # noqa: E402
from tests.helpers_run import write_midi  # noqa: E402

RATE, FACTOR = 8000, 4


def reference_stage(cycle_length: int = 10, cycles: int = 2) -> Stage:
    cfg = stage_arch({**shipped_linear(), "rate": RATE, "residual_channels": 64, "gate_channels": 128,
                      "skip_channels": 128, "kernel_size": 2, "dilation_cycles": cycles, "cycle_length": cycle_length,
                      "use_tier_below": True, "use_roll": False, "use_genre": True})
    torch.manual_seed(0)
    st = Stage(cfg, index=1, n_genres=4, factor=FACTOR, classes=256).eval()
    assert st.linear is not None and st.linear.adaptive, "the shipped linear path"
    return st


def matmul_rate(threads: int, n: int = 512, repeats: int = 5) -> float:
    """Single-precision matrix-multiply rate (FLOP/s), median of ``repeats``, with ``threads``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        k = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            torch.mm(a, b)
            k += 1
        rates.append(2 * n**3 * k / (time.perf_counter() - t0))
    torch.set_num_threads(saved)
    return statistics.median(rates)


# the modules a batch-1 step runs for every sample (the conditioning stack and the genre projection run once
# per chunk of the tier below, amortised over its samples; the embedding reads one row)
PER_SAMPLE = ("convs", "res", "skip", "out1", "out2", "linear", "lin_out")


def weight_bytes_per_sample(st: Stage, weights: str | None = None) -> int:
    """Bytes of weights a batch-1 step reads for each sample: every per-sample layer's weights, one
    embedding row (at their stored precision), the matrices of ``models.quant.QUANTIZED`` in the
    format the fused engine reads (``weights``, default the stage's: bf16 2 bytes; int8 1 byte, int4 half a
    byte, and a float32 scale per output channel)."""
    fmt = stage_weights(st) if weights is None else weights
    total = 0
    for name, module in st.named_children():
        params = list(module.named_parameters())
        if name == "embed":
            total += sum(p[0].numel() * p.element_size() for _, p in params)  # one row
        elif name in PER_SAMPLE:
            for pname, p in params:
                if name in QUANTIZED and pname.endswith("weight"):  # (O, I, k): packed as (I k, O)
                    total += packed_bytes(fmt, (p[0].numel(), p.shape[0]))
                else:
                    total += p.numel() * p.element_size()
    return total


def quantized(st: Stage, fmt: str) -> Stage:
    """A copy of ``st`` with its per-sample matrices in ``fmt`` (models/quant.py)."""
    return quantize_stage(copy.deepcopy(st), fmt) if fmt != "float32" else st


def cache_sizes() -> dict:
    """This machine's data and unified caches per level, bytes (``/sys/devices/system/cpu/cpu0/cache``)."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (d / "level").read_text().strip(), (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        units = {"K": 1024, "M": 1024**2}
        out[f"L{level}"] = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return out


def stream_rate(st: Stage, engine: str, batch: int, steps: int) -> float:
    """Samples per second (per stream) of ``sample_stage`` with ``engine``: a piece of ``steps``."""
    below = torch.randint(0, 256, (batch, steps // FACTOR + 1))
    cond = Conditioning(genre=torch.zeros(batch, dtype=torch.long), below=below)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    sample_stage(st, steps, batch, cond, no_genre=st.n_genres, generator=g, engine=engine)
    return steps / (time.perf_counter() - t0)


def recompute_rate(st: Stage, batch: int, steps: int) -> float:
    """Samples per second of a full forward over the receptive-field window for each sample."""
    w = -(-st.receptive_field // FACTOR) * FACTOR  # window, whole tier-below samples
    x = torch.randint(0, 256, (batch, w + steps * FACTOR))
    below = torch.randint(0, 256, (batch, x.shape[1] // FACTOR))
    cond = Conditioning(genre=torch.zeros(batch, dtype=torch.long), below=below)
    with torch.no_grad():
        st(x[:, :w], cond.window(0, w, FACTOR))  # warm up
        t0 = time.perf_counter()
        for i in range(steps):
            st(x[:, i * FACTOR:i * FACTOR + w], cond.window(i * FACTOR, i * FACTOR + w, FACTOR))
    return steps / (time.perf_counter() - t0)


def engine_rows(st: Stage, big: Stage, repeats: int, q: int, rate1: float,
                weights: tuple[str, ...] = ("bf16", "int8")) -> list[dict]:
    """Rows for the reference stage: each engine and batch, and the fused engine at batch 1 with the
    matrices in each of ``weights`` (besides float32); medians of interleaved repeats."""
    plan = [("recompute", st, 1, 16 // q), ("cached", st, 1, 1200 // q), ("fused", st, 1, 8000 // q),
            *[("fused", quantized(st, fmt), 1, 8000 // q) for fmt in weights if fmt != "float32"],
            ("cached", st, 64, 160 // q), ("fused", st, 64, 1600 // q),
            ("fused", big, 1, 8000 // q), ("fused", big, 64, 1600 // q)]
    for _, stage, batch, _ in plan:  # compile / warm up (numba's cache, first chunk)
        stream_rate(stage, "fused", batch, 64)
    got: dict[int, list[float]] = {i: [] for i in range(len(plan))}
    for _ in range(repeats):
        for i, (engine, stage, batch, steps) in enumerate(plan):
            if engine == "recompute":
                got[i].append(recompute_rate(stage, batch, steps))
            else:
                got[i].append(stream_rate(stage, "reference" if engine == "cached" else engine, batch, steps))
    rows = []
    for i, (engine, stage, batch, steps) in enumerate(plan):
        sps = statistics.median(got[i])
        flops = stage.flops_per_sample()
        rows.append({"engine": engine, "batch": batch, "receptive_field": stage.receptive_field,
                     "layers": stage.n_layers, "steps": steps, "weights": stage_weights(stage),
                     "weight_bytes_per_sample": weight_bytes_per_sample(stage), "samples_per_second": round(sps, 1),
                     "batch_samples_per_second": round(sps * batch, 1),
                     "microseconds_per_step": round(1e6 / sps, 2), "flops_per_sample": flops,
                     "gflops": round(flops * sps * batch / 1e9, 3),
                     "share_of_matmul_rate": round(flops * sps * batch / rate1, 4),
                     "runs": [round(v, 1) for v in got[i]]})
    return rows


GENRES = ["a", "b", "c", "d"]


def tiny_run(root: Path) -> Path:
    """A run folder with the tiny preset's stages as initialised (seeded, untrained).  Not
    ``tests.helpers_run.make_run``: that one perturbs every weight, which widens the adaptive scale
    and with it the hybrid bins the step evaluates (measured with ``--quick``, one core: 0.51 against
    0.37 x real time); the initialised stages sample about as fast as the trained demo run (0.34,
    bench/demo_generation.py on one core)."""
    cfg = load_config("tiny")
    save_config(cfg, root / "config.yaml")
    for k in range(len(cfg.stages)):
        torch.manual_seed(k)
        save_stage(build_stage(cfg, k, len(GENRES)).eval(), root / "stages" / str(k), extra={"genres": GENRES})
    return root


def chord_midi(path: Path, seconds: float) -> Path:
    """A C major chord held for ``seconds`` (the piece's score)."""
    return write_midi(path, notes=[(p, 0.0, seconds) for p in (60, 64, 67)])


def cascade(run_dir: Path, midi: Path, engine: str, seconds: float, count: int, workers: int,
            seed: int = 0) -> dict:
    """``run_cascade`` as ``strata generate`` runs it (a MIDI score and its genre; ``workers``: the
    cores it may use, ``STRATA_GENERATE_WORKERS``): wall and CPU seconds, per stage and in all."""
    os.environ["STRATA_GENERATE_WORKERS"] = str(workers)
    run = load_run(run_dir)
    p = validate_params(run_dir=run_dir, out_dir=run_dir / "out", seconds=seconds, genre=GENRES[0],
                        midi=midi, count=count, engine=engine, seed=seed).with_run_defaults(run.cfg.generate)
    plan = make_plan(run, p)
    with limited_threads(1):
        c0, t0 = time.process_time(), time.perf_counter()
        res = run_cascade(run, plan, p, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stages = [{"stage": t["stage"], "rate": t["rate"], "wall_seconds": round(t["wall_seconds"], 3),
               "engine": t.get("engine"), "pipelined": bool(t.get("pipelined"))} for t in res.timings]
    return {"stages": stages, "wall_seconds": wall, "cpu_seconds": cpu}


def cascade_rows(run_dir: Path, seconds: float, repeats: int) -> dict:
    """Median wall (and CPU) over repeats: the reference and fused engines on one core, the fused
    engine on all cores (stages side by side), and ``--count 8`` on all cores."""
    midi = chord_midi(run_dir / "chord.mid", seconds)
    cores = os.cpu_count() or 1
    plan = {"reference": ("reference", 1, 1), "fused": ("fused", 1, 1), "fused_cores": ("fused", 1, cores),
            "fused_count8": ("fused", 8, cores)}
    cascade(run_dir, midi, "fused", 0.25, 1, cores)  # warm up (numba's cache, the run's files)
    runs: dict[str, list[dict]] = {name: [] for name in plan}
    for i in range(repeats):
        for name, (engine, count, workers) in plan.items():
            runs[name].append(cascade(run_dir, midi, engine, seconds, count, workers, seed=i))
    out = {}
    for name, rr in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in rr)
        cpu = statistics.median(r["cpu_seconds"] for r in rr)
        stages = [{**rr[0]["stages"][k], "wall_seconds": statistics.median(r["stages"][k]["wall_seconds"] for r in rr)}
                  for k in range(len(rr[0]["stages"]))]
        for s in stages:
            s["real_time_factor"] = round(s["wall_seconds"] / seconds, 4)
        engine, count, workers = plan[name]
        out[name] = {"engine": engine, "count": count, "workers": workers, "stages": stages,
                     "wall_seconds": round(wall, 3), "real_time_factor": round(wall / seconds, 4),
                     "cpu_seconds": round(cpu, 3), "cpu_real_time_factor": round(cpu / seconds, 4),
                     "runs": [round(r["wall_seconds"], 3) for r in rr]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (generation's default: 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="cascade piece length")
    ap.add_argument("--run", type=Path, default=None, help="a trained run folder for the cascade")
    ap.add_argument("--weights", nargs="+", default=list(WEIGHT_FORMATS), choices=WEIGHT_FORMATS,
                    help="formats of the fused batch-1 rows (float32 always runs; models/quant.py)")
    args = ap.parse_args(argv)
    q = 4 if args.quick else 1
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    rate1 = matmul_rate(args.threads)
    st, big = reference_stage(), reference_stage(cycle_length=11)
    rows = engine_rows(st, big, repeats, q, rate1, tuple(args.weights))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run if args.run is not None else tiny_run(Path(tmp) / "run")
        casc = cascade_rows(run_dir, args.seconds / q, repeats)
    rate1_after = matmul_rate(args.threads)

    def sps(engine, batch, rf=st.receptive_field, weights="float32"):
        return next(r["samples_per_second"] for r in rows if r["engine"] == engine and r["batch"] == batch
                    and r["receptive_field"] == rf and r["weights"] == weights)

    formats = [f for f in args.weights if f != "float32"]

    summary = {
        "fused_over_cached_batch1": round(sps("fused", 1) / sps("cached", 1), 1),
        "fused_over_cached_batch64": round(sps("fused", 64) / sps("cached", 64), 1),
        "cached_over_recompute_batch1": round(sps("cached", 1) / sps("recompute", 1), 1),
        "fused_cost_ratio_rf_doubled_batch1": round(sps("fused", 1) / sps("fused", 1, big.receptive_field), 3),
        "fused_cost_ratio_rf_doubled_batch64": round(sps("fused", 64) / sps("fused", 64, big.receptive_field), 3),
        "layers_ratio_rf_doubled": big.n_layers / st.n_layers,
        **{f"fused_{fmt}_batch1_samples_per_second": sps("fused", 1, weights=fmt) for fmt in formats},
        **{f"fused_{fmt}_over_float32_batch1": round(sps("fused", 1, weights=fmt) / sps("fused", 1), 3)
           for fmt in formats},
        "cascade_rtf_fused": casc["fused"]["real_time_factor"],
        "cascade_rtf_fused_cores": casc["fused_cores"]["real_time_factor"],
        "cascade_rtf_reference": casc["reference"]["real_time_factor"],
        "count8_over_count1_wall": round(casc["fused_count8"]["wall_seconds"] / casc["fused_cores"]["wall_seconds"],
                                         3),
        "cores": os.cpu_count(),
    }
    report = {
        "machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]),
        "matmul_flops_per_second": {"threads": args.threads, "before": rate1, "after": rate1_after},
        "stage": {"layers": st.n_layers, "residual_channels": 64, "gate_channels": 128, "skip_channels": 128,
                  "classes": 256, "factor": FACTOR, "receptive_field": st.receptive_field, "params": st.n_params,
                  "linear_path": True, "adaptive_scale": True},
        "flops_per_sample": st.flops_per_sample(), "flops_per_sample_rf_doubled": big.flops_per_sample(),
        "weight_bytes_per_sample": weight_bytes_per_sample(st), "cache_bytes": cache_sizes(),
        "weight_bytes_per_sample_by_format": {fmt: weight_bytes_per_sample(st, fmt) for fmt in WEIGHT_FORMATS},
        "results": rows,
        "cascade": {"preset": "tiny" if args.run is None else str(args.run), "seconds": args.seconds / q,
                    **casc},
        "summary": summary,
    }
    print(f"matmul rate {rate1 / 1e9:.1f} GFLOP/s ({args.threads} thread(s)); flops/sample "
          f"{st.flops_per_sample():.3g}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("weights read per sample " + ", ".join(f"{fmt} {weight_bytes_per_sample(st, fmt) / 1e6:.2f} MB"
                                                 for fmt in WEIGHT_FORMATS) + "; caches "
          + ", ".join(f"{k} {v // 1024} KiB" for k, v in cache_sizes().items()))
    print(f"{'engine':<10}{'weights':>8}{'batch':>6}{'RF':>7}{'samples/s':>12}{'batch samples/s':>17}{'us/step':>10}"
          f"{'GFLOP/s':>9}{'% matmul':>10}{'MB/sample':>10}")
    for r in rows:
        print(f"{r['engine']:<10}{r['weights']:>8}{r['batch']:>6}{r['receptive_field']:>7}{r['samples_per_second']:>12.1f}"
              f"{r['batch_samples_per_second']:>17.1f}{r['microseconds_per_step']:>10.1f}{r['gflops']:>9.2f}"
              f"{100 * r['share_of_matmul_rate']:>9.1f}%{r['weight_bytes_per_sample'] / 1e6:>10.3f}")
    for name, c in casc.items():
        stages_txt = ", ".join(f"{s['rate'] // 1000} kHz {s['real_time_factor']:.3f}" for s in c["stages"])
        print(f"cascade {name}: real-time factor {c['real_time_factor']:.3f} ({stages_txt})")
    for k, v in summary.items():
        print(f"{k}: {v}")
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
