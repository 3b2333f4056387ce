"""A quick standalone check that the score tier learns a dataset's scores better than the n-grams.

Not the real training (that is ``strata train``): a plain AdamW loop on one thread for ``--seconds``,
random windows of the training split's event sequences, augmented by transposition (+-5 semitones)
and tempo (x0.9-1.1), genre dropped to "no genre" 10% of the time; the validation split picks the
best step; the test split is scored once with it, beside the unigram and the best Kneser-Ney n-gram
over the same events.  Then novelty and style of a few samples per genre against the training and
held-out scores, beside the chord chain's (``pipeline/score_model.py``).

    python bench/score_tier_probe.py --data DIR [--seconds 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.score_tier import ScoreTierConfig, ScoreTransformer, nll_bits, window_batch  # noqa: E402
from pipeline import score_events as se, score_model  # noqa: E402
from pipeline.dataset import load_manifest  # noqa: E402
from pipeline.io import load_npy  # noqa: E402
from pipeline.score_baselines import ngram_table  # noqa: E402
from pipeline.score_metrics import novelty, style_overlap  # noqa: E402


def load(data: Path) -> tuple[dict, int, dict[str, list[tuple[int, list[int], np.ndarray]]]]:
    manifest = load_manifest(data)
    fps = int(manifest.get("roll_fps", 100))
    split: dict[str, list] = {"train": [], "valid": [], "test": []}
    for t in manifest["tracks"]:
        if t.get("roll"):
            roll = load_npy(data / t["roll"])
            split[t["split"]].append((int(t["genre_id"]), se.roll_to_events(roll, fps), roll))
    return manifest, fps, split


def augment(events: list[int], rng: np.random.Generator) -> list[int]:
    out = se.stretch(events, float(rng.uniform(0.9, 1.1)))
    for _ in range(4):
        moved = se.transpose(out, int(rng.integers(-5, 7)))
        if moved is not None:
            return moved
    return out


def held_bits(model: ScoreTransformer, pieces) -> tuple[float, int]:
    total, n = 0.0, 0
    for g, events, _ in pieces:
        b, k = model.events_bits(events, g)
        total, n = total + b, n + k
    return total, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=300.0, help="training wall time")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=float, default=45.0, help="seconds between validations")
    ap.add_argument("--samples", type=int, default=3, help="generated pieces per genre for novelty/style")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    manifest, fps, split = load(args.data)
    genres = list(manifest["genres"])
    cfg = ScoreTierConfig(vocab_size=se.VOCAB_SIZE, n_genres=len(genres), end_token=se.END, pad_token=se.PAD,
                          context=args.context)
    model = ScoreTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    train = split["train"]
    weights = np.array([len(e) for _, e, _ in train], float)
    weights /= weights.sum()
    best, best_state, step, curve = math.inf, None, 0, []
    t0 = last_eval = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - last_eval >= args.eval_every or now - t0 >= args.seconds or step == 0:
            b, n = held_bits(model, split["valid"])
            curve.append({"step": step, "seconds": round(now - t0, 1), "valid_bits_per_event": b / n})
            print(json.dumps(curve[-1]), flush=True)
            if b / n < best:
                best, best_state = b / n, {k: v.clone() for k, v in model.state_dict().items()}
            last_eval = time.perf_counter()
            if now - t0 >= args.seconds:
                break
        pieces, starts, genre = [], [], []
        for i in rng.choice(len(train), size=args.batch, p=weights):
            g, events, _ = train[i]
            events = augment(events, rng)
            pieces.append(events)
            starts.append(int(rng.integers(0, max(1, len(events) - args.context // 4))))
            genre.append(cfg.n_genres if rng.random() < 0.1 else g)
        x, y, mask = window_batch(pieces, starts, cfg.context, cfg.end_token, cfg.pad_token)
        model.train()
        lr = args.lr * min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = nll_bits(model(x, torch.tensor(genre)), y, mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
    model.load_state_dict(best_state)
    model.eval()
    b, n = held_bits(model, split["test"])
    seqs = lambda s: [e for _, e, _ in split[s]]  # noqa: E731
    table = ngram_table(seqs("train"), seqs("test"), se.VOCAB_SIZE)
    result = {"data": str(args.data), "params": model.n_params, "config": model.describe()["config"],
              "steps": step, "train_seconds": args.seconds, "train_events": sum(len(e) for e in seqs("train")),
              "test": {"score_tier": b / n, **table, "score_tier_vs_best_ngram": 1 - (b / n) / table["best"]},
              "curve": curve}
    print(json.dumps(result["test"], indent=1), flush=True)
    chain = score_model.fit([(genres[g], r) for g, _, r in train], fps)
    result["samples"] = {}
    for gid, genre in enumerate(genres):
        held = [r for g, _, r in split["valid"] + split["test"] if g == gid]
        train_rolls = [r for g, _, r in train if g == gid]
        if not held or not train_rolls:
            continue
        t1 = time.perf_counter()
        tier = [se.events_to_roll(model.generate(gid, 3000, seed=s, max_seconds=30.0, seconds_of=se.token_seconds),
                                  fps) for s in range(args.samples)]
        gen_s = time.perf_counter() - t1
        tier = [r for r in tier if r[1].any()]
        chain_rolls = [score_model.sample_roll(chain, genre, 30 * fps, seed=s) for s in range(args.samples)]
        row = {"generate_seconds": gen_s, "tier_seconds": [r.shape[2] / fps for r in tier]}
        for name, rolls in (("score_tier", tier), ("chain", chain_rolls)):
            if rolls:
                nov = novelty(rolls, [r for _, _, r in train], fps)
                nov.pop("pieces")
                row[name] = {"novelty": nov, "style": style_overlap(rolls, held, fps)}
        result["samples"][genre] = row
        print(genre, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
