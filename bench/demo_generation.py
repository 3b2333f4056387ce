"""The demo's generation (``make demo``: a 4 s piece per genre and one from a test-split MIDI file)
with each engine, timed without Prefect: the wall time a demo user waits for sampling.

    .venv/bin/python bench/demo_generation.py --run demo/run --data demo/data --json bench/results/demo_generation.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)


def demo_pieces(data: Path) -> list[dict]:
    """The demo's prompts: every genre of the dataset, then the first test-split track's MIDI file."""
    manifest = json.loads((data / "manifest.json").read_text())
    pieces = [{"genre": g} for g in manifest["genres"]]
    midi = next((t["midi"] for t in manifest["tracks"] if t["split"] == "test" and t.get("midi")), None)
    if midi:
        pieces.append({"midi": midi})
    return pieces


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.generation.generate import generate

    pieces = demo_pieces(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.run, Path(tmp) / "warm", progress=False, seconds=0.25, **pieces[0])  # numba cache, weights
        for engine in ("fused", "reference"):
            for i, piece in enumerate(pieces):
                c0, t0 = time.process_time(), time.perf_counter()
                jobs = generate(args.run, Path(tmp) / f"{engine}-{i}", progress=False, seconds=args.seconds,
                                engine=engine, **piece)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                meta = json.loads((jobs[0] / "meta.json").read_text())
                sampling = meta["timings"]["total_wall_seconds"]
                rows.append({"engine": engine, "piece": piece.get("genre") or Path(piece["midi"]).name,
                             "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                             "sampling_seconds": round(sampling, 2)})
                print(rows[-1], flush=True)
    total = {e: round(sum(r["wall_seconds"] for r in rows if r["engine"] == e), 2) for e in ("fused", "reference")}
    report = {"machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]), "rows": rows,
              "total_wall_seconds": total, "speedup": round(total["reference"] / total["fused"], 1)}
    print(f"demo generation: fused {total['fused']} s, reference {total['reference']} s "
          f"({report['speedup']}x); load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
