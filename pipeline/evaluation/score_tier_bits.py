"""The score tier's held-out bits (``strata evaluate``'s ``score_tier`` entry): per event and per second on a
split's scores, beside unigram and n-gram baselines (``pipeline/evaluation/score_baselines.py``) fitted on the
events the tier learned from.  The tier itself (training, files, sampling): ``pipeline/training/score_tier.py``."""

from __future__ import annotations

import torch

from pipeline.corpus.score_events import VOCAB_SIZE
from pipeline.evaluation.score_baselines import ngram_table
from pipeline.run import SCORE_KEY, stage_dir
from pipeline.training.score_tier import TRAIN_EVENTS, load_pieces, load_score_tier, split_pieces


def evaluate_score_tier(data_dir, manifest: dict, run_dir, split: str) -> dict | None:
    """Held-out bits per event and per second of the score tier on ``split``'s scores, beside the classic
    baselines over the same events (unigram, smoothed n-grams of orders 2-5, fitted on the events the tier
    learned from); None when the run has no score tier or the split no score."""
    loaded = load_score_tier(run_dir)
    if loaded is None:
        return None
    model, desc = loaded
    extra = desc.get("extra") or {}
    genres, fps = list(extra.get("genres") or manifest["genres"]), int(extra.get("roll_fps", 100))
    test = split_pieces(data_dir, manifest, split, fps)
    if not test:
        return None
    with torch.inference_mode():
        bits = sum(model.events_bits(list(p.events), genres.index(p.genre) if p.genre in genres else len(genres))[0]
                   for p in test)
    events = sum(len(p.events) for p in test)
    seconds = sum(p.seconds for p in test)
    train_path = stage_dir(run_dir, SCORE_KEY) / TRAIN_EVENTS
    train = [e for _, e in load_pieces(train_path)] if train_path.is_file() else \
        [list(p.events) for p in split_pieces(data_dir, manifest, "train", fps)]
    table = ngram_table(train, [list(p.events) for p in test], VOCAB_SIZE)
    per_event = bits / events
    best = table["best"]
    return {"pieces": len(test), "events": events, "seconds": round(seconds, 2),
            "bits_per_event": per_event, "bits_per_second": bits / max(seconds, 1e-9),
            "baselines": table, "best_ngram_bits_per_event": best,
            "fewer_bits_than_best_ngram": 1.0 - per_event / best,
            "train_pieces": len(train), "train_events": sum(len(e) for e in train),
            "valid_bits_per_event": extra.get("valid_bits_per_event"), "step": extra.get("step"),
            "n_params": desc.get("n_params")}
