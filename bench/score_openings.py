"""Does the score tier write music from its first bar, and does it come back to it?  Against real scores.

For every genre of a run's score tier and unconditionally: ``--pieces`` scores of ``--seconds`` (asked that
length, the run's score sampling settings, seeds 0..N-1), and the real scores of the training split and of
the held-out splits: onsets per second, the share of scores with no onset in their first 4 s, the share
with none at all (``pipeline.evaluation.score_metrics.note_density``; a silent score renders as silence), and
form as repetition: how much each 2 s segment restates an earlier one (``chroma_repetition``), beside the
real scores of the genre over the same span.  And whether the genre is in the notes: a classifier fitted on
clips of the real training scores, scored on the held-out scores and on the tier's (``genre_by_score``: no
audio, so what the cascade's audio loses of it, the rendering lost).

    python bench/score_openings.py --data demo_final/data --run demo_final/run --json docs/results/score_openings.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from pipeline.corpus.dataset import load_manifest  # noqa: E402
from pipeline.corpus.score_events import events_to_roll  # noqa: E402
from pipeline.evaluation.score_metrics import chroma_repetition, genre_by_score, note_density  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import SCORE_KEY, read_config, stage_dir  # noqa: E402
from pipeline.training.score_tier import (  # noqa: E402
    TRAIN_EVENTS,
    load_pieces,
    load_score_tier,
    sample_events,
    split_pieces,
)


def measures(pieces: list, span: float, fps: int) -> dict | None:
    """``note_density`` of the pieces' first ``span`` s, and the median of their ``chroma_repetition`` there."""
    d = note_density(pieces, span=span)
    if d is None:
        return None
    reps = [r for r in (chroma_repetition(events_to_roll(e, fps, max_frames=int(span * fps)), fps) for e in pieces)
            if r is not None]
    return {**d, "repetition_median": round(float(np.median(reps)), 3) if reps else None,
            "repetition_segment_seconds": 2.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--pieces", type=int, default=8, help="sampled scores per genre (and unconditional)")
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    data, run = Path(a.data), Path(a.run)
    manifest, cfg = load_manifest(data), read_config(run)
    g, fps = cfg.generate, cfg.data.roll_fps
    model, desc = load_score_tier(run)
    genres = list(desc["extra"]["genres"])
    train = load_pieces(stage_dir(run, SCORE_KEY) / TRAIN_EVENTS)
    heldout = [p for s in ("valid", "test") for p in split_pieces(data, manifest, s, fps)]
    told = a.seconds if model.cfg.length_buckets else None
    rows, every, labelled = {}, [], []
    for gi, name in enumerate([*genres, "unconditional"]):
        made = [sample_events(model, gi, a.seconds, seed, g.score_temperature, g.score_top_p,
                              min_seconds=g.score_min_seconds, length_seconds=told) for seed in range(a.pieces)]
        every += made
        labelled += [(gi, e) for e in made] if gi < len(genres) else []
        rows[name] = {"tier": measures(made, a.seconds, fps)}
        if gi < len(genres):
            rows[name]["real training"] = measures([e for k, e in train if k == gi], a.seconds, fps)
            rows[name]["real held-out"] = measures([p.events for p in heldout if p.genre == name], a.seconds, fps)
    rows["all"] = {"tier": measures(every, a.seconds, fps),
                   "real training": measures([e for _, e in train], a.seconds, fps),
                   "real held-out": measures([p.events for p in heldout], a.seconds, fps)}
    by_score = (genre_by_score(train, [(genres.index(p.genre), p.events) for p in heldout if p.genre in genres],
                               labelled, len(genres)) if len(genres) > 1 else None)
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "run_steps": desc["extra"].get("step"),
           "sampling": {"temperature": g.score_temperature, "top_p": g.score_top_p, "min_seconds": g.score_min_seconds,
                        "seconds": a.seconds, "asked_length": told},
           "tier_training": desc["extra"].get("training"), "genres": rows, "genre_by_score": by_score,
           "wall_seconds": round(time.time() - t0, 1)}
    atomic_write_json(a.json, out)
    for name, r in rows.items():
        print(name, {k: (v or {}).get("onsets_per_second_median") for k, v in r.items()},
              "quiet openings:", (r["tier"] or {}).get("quiet_opening_share"))
    if by_score:
        print("genre by score: real held-out", by_score["real_heldout"], "tier", by_score["generated"],
              "chance", by_score["chance"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
