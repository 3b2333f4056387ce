"""The score tier's measures (issue 19): held-out bits per event against n-grams, novelty and style of the
scores it writes against the chain's, their lengths, and its speed.

    python bench/score_tier.py --data demo/data --run demo/run --json docs/results/score_tier.json

- bits: ``pipeline.evaluation.score_tier_bits.evaluate_score_tier`` on the test split, and on ``--other``
  scores (another corpus: Essen folk songs and Monteverdi madrigals from music21, never seen in training) with the same
  n-grams (fitted on the events the tier learned from);
- novelty (against every score the tier learned from) and style overlap (against the genre's held-out
  valid + test scores), for ``--pieces`` scores per genre from the tier and from the chain, 30 s each;
- lengths: ``--lengths`` genre-prompted scores (the genres in turn) and ``--lengths`` unconditional ones, each
  capped at 2.5x the median length of its genre's training scores (all genres' for unconditional ones; past
  2x a piece has missed anyway): how many end by the tier's own END within 0.5-2x that median, asked no
  length and (a tier that learned lengths) asked a training piece's length; beside them the share of the
  training pieces themselves within that range;
- where it puts END (``end_hazard``): on whole pieces, held-out and a few per genre it learned from, the
  chance it gives each event of being the END, asked no length, so the sampled lengths can be told apart from
  the model's reading of real pieces: its chance of letting a real piece play on to half its length, and to
  its last event, and of ending it there;
- genre by notes (``score_metrics.genre_by_score``): a classifier fitted on 8 s clips of the training scores
  recognises the genre of clips of the real held-out scores, of the tier's 30 s scores and of the chain's;
- speed: seconds to write 60 s of score on one thread (unconditional, and for a genre: guidance runs a twin), a
  whole 60 s score (END held back) after one warm-up score.

``--score-guidance W`` samples every genre-prompted score with classifier-free guidance W (default: the run's
``generate.score_guidance``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)
from pipeline.corpus.dataset import load_manifest  # noqa: E402 - the repository root first (run as a script)
from pipeline.corpus.demo_data import Work, write_work_midi  # noqa: E402
from pipeline.corpus.score_events import (  # noqa: E402
    END,
    STEPS_PER_SECOND,
    VOCAB_SIZE,
    event_clock,
    events_seconds,
    events_to_roll,
    roll_to_events,
)
from pipeline.evaluation.score_baselines import ngram_table  # noqa: E402
from pipeline.evaluation.score_metrics import (  # noqa: E402
    fit_score_classifier,
    genre_by_score,
    heard_genre,
    note_density,
    novelty,
    style_overlap,
)
from pipeline.evaluation.score_tier_bits import evaluate_score_tier  # noqa: E402
from pipeline.io import atomic_write_json  # noqa: E402
from pipeline.run import SCORE_KEY, read_config, stage_dir  # noqa: E402
from pipeline.training.score_model import read_score_model, sample_roll  # noqa: E402
from pipeline.training.score_tier import (  # noqa: E402
    TRAIN_EVENTS,
    chosen_length,
    extra_pieces,
    is_whole,
    lengths_of,
    load_pieces,
    load_score_tier,
    sample_events,
    split_pieces,
)

OTHER = {"folk": "essenFolksong", "renaissance": "monteverdi"}  # another corpus of two demo genres


def other_scores(out: Path, per_genre: int) -> Path:
    """MIDI files of ``OTHER``'s composers under ``out/<genre>/`` (kept between runs)."""
    from music21 import common, corpus

    root = Path(common.getCorpusFilePath())
    for genre, composer in OTHER.items():
        for p in sorted(corpus.getComposer(composer))[:per_genre]:
            work = Work(genre, Path(p).relative_to(root).as_posix(), 0)
            dst = out / genre / f"{work.name}.mid"
            if not dst.is_file():
                try:
                    write_work_midi(work, dst, 60.0)
                except Exception as e:  # noqa: BLE001 - a work music21 cannot write: skipped, said
                    print(f"warning: {work.corpus_path}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    return out


def tier_bits(model, pieces, genres: list[str], train: list[list[int]]) -> dict:
    """Bits per event of the tier on ``pieces`` (genre given) beside the n-grams fitted on ``train``."""
    with torch.inference_mode():
        bits = sum(model.events_bits(list(p.events), genres.index(p.genre))[0] for p in pieces)
    n = sum(len(p.events) for p in pieces)
    table = ngram_table(train, [list(p.events) for p in pieces], VOCAB_SIZE)
    return {"pieces": len(pieces), "events": n, "bits_per_event": bits / n, "baselines": table,
            "fewer_bits_than_best_ngram": 1.0 - bits / n / table["best"]}


MIN_REFERENCE = 5  # whole training pieces: a genre's median length from fewer is no reference for the range


def piece_lengths(model, train: list[tuple[int, list[int]]], genres: list[str], genre_ids: list[int], n: int,
                  g, told: bool, chosen: bool = False, classifier=None) -> dict:
    """``n`` scores of ``genre_ids`` in turn (``len(genres)``: none), each capped at 2.5x the median length of
    its genre's training scores (all scores' when unconditional): their lengths and how many ended by the
    tier's own END within 0.5-2x that median.  ``told``: each is asked for the length of a training piece of
    its genre drawn by its seed (as ``strata generate`` asks without ``--seconds``), and how near its END came
    to that length is reported too; ``chosen`` (a tier with a length head): each is asked the length the tier
    chooses itself (``chosen_length``, as ``strata generate`` asks such a tier), reported alike; else no length is
    asked (where the tier's END falls by itself).

    Two readings beside the range target's: ``ended_within_range_where_reference`` counts only the pieces of
    genres with at least ``MIN_REFERENCE`` whole training pieces (a median of one piece says little about a
    genre's lengths); an unconditional piece is also judged against the median of the genre that ``classifier``
    (``score_metrics.fit_score_classifier``) hears in its notes (``within_range_of_heard_genre``): the median of
    all pieces of a corpus of short and long genres fits neither."""
    rows = []
    for i in range(n):
        gi = genre_ids[i % len(genre_ids)]
        own = lengths_of(train, None if gi == len(genres) else gi)  # whole pieces: excerpts have no length
        lengths = own or lengths_of(train, None)  # a genre of excerpts only: all genres' (as generate does)
        median = float(np.median(lengths))
        if chosen:
            asked = chosen_length(model, gi, 1000 + i, min_seconds=g.score_min_seconds,
                                  temperature=g.score_length_temperature)
        else:
            asked = float(np.random.default_rng([1000 + i, 211]).choice(lengths)) if told else None
        cap = 2.5 * median if asked is None else max(2.5 * median, 1.25 * asked)  # room to end where asked
        ev = sample_events(model, gi, cap, 1000 + i, g.score_temperature, g.score_top_p,
                           min_seconds=g.score_min_seconds, length_seconds=asked, guidance=g.score_guidance)
        ended = ev.count(END) == 1 and len(ev) >= 2 and model_ended(ev, cap)
        seconds = events_seconds(ev)
        rows.append({"genre": genres[gi] if gi < len(genres) else None, "seconds": round(seconds, 2),
                     "asked_seconds": None if asked is None else round(asked, 2),
                     "ended_by_end_event": ended, "median_training_seconds": round(median, 2),
                     "cap_seconds": round(cap, 2), "reference_pieces": len(own),
                     "within_half_to_twice_median": bool(ended and in_range(seconds, median))})
        if gi == len(genres) and classifier is not None:
            hg = heard_genre(classifier, ev)
            ref = lengths_of(train, hg) if hg is not None else []
            m = float(np.median(ref)) if ref else None
            rows[-1].update({"heard_genre": genres[hg] if hg is not None else None,
                             "heard_genre_median_seconds": None if m is None else round(m, 2),
                             "within_range_of_heard_genre": bool(ended and m and in_range(seconds, m))})
    return {"told_length": told or chosen, "asked": "chosen" if chosen else "training" if told else None,
            **length_counts(rows, asked=told or chosen)}


def length_counts(rows: list[dict], asked: bool) -> dict:
    """The counts of ``piece_lengths`` over its rows (``asked``: each row was asked a length)."""
    out = {"pieces": rows, "ended_by_end_event": sum(r["ended_by_end_event"] for r in rows),
           "ended_within_range": sum(r["within_half_to_twice_median"] for r in rows), "of": len(rows)}
    known = [r for r in rows if r["reference_pieces"] >= MIN_REFERENCE]
    out["ended_within_range_where_reference"] = sum(r["within_half_to_twice_median"] for r in known)
    out["of_where_reference"] = len(known)
    if any("within_range_of_heard_genre" in r for r in rows):
        out["ended_within_range_of_heard_genre"] = sum(r.get("within_range_of_heard_genre", False) for r in rows)
    if asked:
        errors = [abs(r["seconds"] / r["asked_seconds"] - 1.0) for r in rows if r["ended_by_end_event"]]
        out["median_relative_error_of_ended"] = round(float(np.median(errors)), 3) if errors else None
        out["ended_within_10pct_of_asked"] = sum(e <= 0.1 for e in errors)
    return out


def end_hazard(model, pieces: list[tuple[int, list[int]]], genres: list[str], min_seconds: float) -> dict:
    """Per genre, over whole pieces ``(genre id, events)`` read asked no length (END not counted in the first
    ``min_seconds``, as sampling forbids it there): the median over pieces of the model's chance of not writing
    END before half the piece's length (``survives_to_half``) and before its last event (``survives_to_end``),
    and of writing END where the piece ends (``end_at_end``).  A tier whose sampled lengths match real ones
    has survives_to_half near 1 and survives_to_end near 0.5."""
    rows: dict[str, list] = {}
    for gi, ev in pieces:
        if not is_whole(ev) or len(ev) < 2:
            continue
        p_end = model.event_log_probs(ev, gi)[:, END].exp().double()  # (N,): before each event
        clock = event_clock(ev)[:-1] / STEPS_PER_SECOND  # (N,) seconds before each event
        seconds = events_seconds(ev)
        live = torch.from_numpy(clock >= min_seconds)
        keep = torch.log1p(-p_end.clamp(max=1 - 1e-12)) * live  # log chance of going on, per event
        half = torch.from_numpy(clock < 0.5 * seconds)
        rows.setdefault(genres[gi], []).append((float(keep[half].sum().exp()), float(keep[:-1].sum().exp()),
                                                float(p_end[-1])))
    return {g: {"pieces": len(r), "survives_to_half": round(float(np.median([a for a, _, _ in r])), 3),
                "survives_to_end": round(float(np.median([b for _, b, _ in r])), 3),
                "end_at_end": round(float(np.median([c for _, _, c in r])), 3)} for g, r in rows.items()}


def length_head_bits(model, held: list[tuple[int, list[int]]], train: list[tuple[int, list[int]]],
                     genres: list[str]) -> dict:
    """The length head against the classic baseline, on the lengths of held-out whole pieces: bits of each
    piece's length bucket (``remain_id`` at its opening) under the head (genre given, nothing played yet) and
    under the genre's histogram of training lengths over the same buckets (add-one smoothed), and the share of
    pieces whose length lies within 0.5-2x the head's median choice."""
    cfg = model.cfg
    n_b = cfg.length_buckets - 1  # buckets 1..length_buckets - 1 (0: "no length")

    def bucket(ev) -> int:
        steps = int(event_clock(ev)[-1])
        return int(model.remain_id(torch.tensor(steps), torch.tensor(steps)))

    counts = np.ones((len(genres), n_b))  # add-one
    for gi, ev in train:
        if is_whole(ev):
            counts[gi, bucket(ev) - 1] += 1
    hist = counts / counts.sum(1, keepdims=True)
    opening: dict[int, tuple[torch.Tensor, float]] = {}  # genre -> (the head's log-probs at an opening, its median s)
    head_bits, hist_bits, within = [], [], []
    for gi, ev in held:
        if not is_whole(ev):
            continue
        if gi not in opening:
            with torch.inference_mode():
                h, x0 = model._hidden(torch.tensor([[END]]), torch.tensor([gi]), offset=torch.tensor([0]),
                                      with_input=True)
                logits = model._left(h, x0)[0, -1].float()
                logits[0] = -float("inf")  # "no length"
                logp = torch.log_softmax(logits, -1)
            median_b = int((logp.exp().cumsum(0) >= 0.5).nonzero()[0])
            opening[gi] = logp, model.left_bucket_steps(median_b, 0.5) / STEPS_PER_SECOND
        logp, median_s = opening[gi]
        b = bucket(ev)
        head_bits.append(float(-logp[b]) / np.log(2))
        hist_bits.append(float(-np.log2(hist[gi, b - 1])))
        within.append(in_range(events_seconds(ev), median_s))
    if not head_bits:
        return {"pieces": 0}
    return {"pieces": len(head_bits), "head_bits": round(float(np.mean(head_bits)), 3),
            "histogram_bits": round(float(np.mean(hist_bits)), 3),
            "within_half_to_twice_head_median": round(float(np.mean(within)), 3)}


def in_range(seconds, median: float):
    """Whether ``seconds`` (a number, or an array of them elementwise) lies within 0.5-2x ``median``: the length
    target's range."""
    return (seconds >= 0.5 * median) & (seconds <= 2.0 * median)


def share_in_range(lengths: np.ndarray, median: float) -> float:
    """The share of ``lengths`` within 0.5-2x ``median`` (``in_range``); 0 for none."""
    return float(in_range(lengths, median).mean()) if len(lengths) else 0.0


def real_lengths(train: list[tuple[int, list[int]]], genres: list[str]) -> dict:
    """What the range target can reach: the share of the whole training pieces themselves within 0.5-2x their
    genre's median (and of all pieces within 0.5-2x the median of all); excerpts counted beside them."""
    out = {}
    for gi in [*range(len(genres)), None]:
        sec = np.array(lengths_of(train, gi))
        m = float(np.median(sec)) if len(sec) else float("nan")
        out[genres[gi] if gi is not None else "all"] = {
            "pieces": len(sec), "median_seconds": round(m, 2) if len(sec) else None,
            "excerpts": sum(1 for gid, e in train if (gi is None or gid == gi) and not is_whole(e)),
            "share_within_half_to_twice_median": round(share_in_range(sec, m), 3) if len(sec) else None}
    return out


SPEED_SECONDS = 60.0  # the speed target's score length


def score_speed(model, genre_id: int, g, guidance: float) -> dict:
    """Wall time of a 60 s score of ``genre_id`` on this thread, after one short warm-up score (the process's
    one-time costs: numba's cached kernel, the weights packed): END is held back until 60 s of music, so every
    row times a whole 60 s score, not a short one scaled up."""
    sample_events(model, genre_id, 2.0, 6, g.score_temperature, g.score_top_p, guidance=guidance)  # warm-up
    t0 = time.perf_counter()
    ev = sample_events(model, genre_id, SPEED_SECONDS, 7, g.score_temperature, g.score_top_p,
                       min_seconds=SPEED_SECONDS, guidance=guidance)
    wall, music = time.perf_counter() - t0, max(events_seconds(ev), 1e-9)
    return {"events": len(ev), "music_seconds": round(music, 2), "wall_seconds": round(wall, 3),
            "seconds_per_60s_of_score": round(wall / music * 60.0, 3), "threads": 1}


def model_ended(events: list[int], cap: float) -> bool:
    """Whether the tier wrote the END of ``events`` itself: the cap appends one too, when the next event would pass
    ``cap`` seconds (the time shifts are at most 1 s, so a piece the cap ended lies within 1 s of it)."""
    return events_seconds(events) < cap - 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--pieces", type=int, default=5, help="scores per genre for novelty and style")
    ap.add_argument("--lengths", type=int, default=10, help="genre-prompted scores for the length target")
    ap.add_argument("--other", default="demo/other_scores",
                    help="folder for the other corpus's MIDI files ('': none, for a corpus that learned from them)")
    ap.add_argument("--other-per-genre", type=int, default=10)
    ap.add_argument("--hazard-pieces", type=int, default=8,
                    help="whole training pieces per genre read for where the tier puts END (evenly spaced)")
    ap.add_argument("--lengths-from", default=None,
                    help="a run whose training pieces give the lengths (medians, asked lengths; default: --run's), "
                         "so two tiers trained on the same works are measured against the same lengths")
    ap.add_argument("--score-guidance", type=float, default=None,
                    help="classifier-free guidance W of the genre-prompted scores (default: the run's config)")
    ap.add_argument("--score-temperature", type=float, default=None,
                    help="the tier's sampling temperature (default: the run's config)")
    ap.add_argument("--score-top-p", type=float, default=None, help="the tier's nucleus (default: the run's config)")
    ap.add_argument("--score-length-temperature", type=float, default=None,
                    help="the temperature of the length head's draw (default: the run's config)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    data, run = Path(a.data), Path(a.run)
    manifest, cfg = load_manifest(data), read_config(run)
    fps, g = cfg.data.roll_fps, cfg.generate
    if a.score_guidance is not None:
        g = dataclasses.replace(g, score_guidance=a.score_guidance)
    if a.score_temperature is not None:
        g = dataclasses.replace(g, score_temperature=a.score_temperature)
    if a.score_top_p is not None:
        g = dataclasses.replace(g, score_top_p=a.score_top_p)
    if a.score_length_temperature is not None:
        g = dataclasses.replace(g, score_length_temperature=a.score_length_temperature)
    model, desc = load_score_tier(run)
    genres = list(desc["extra"]["genres"])
    train = load_pieces(stage_dir(run, SCORE_KEY) / TRAIN_EVENTS)
    train_events = [e for _, e in train]
    out: dict = {**run_info(argv and [sys.argv[0], *argv]),
                 "dirty": bool(_git("status", "--porcelain", "--", "pipeline", "models", "bench")),
                 "machine": machine_info(), "run_steps": desc["extra"].get("step"), "n_params": desc.get("n_params"),
                 "sampling": {"temperature": g.score_temperature, "top_p": g.score_top_p,
                              "min_seconds": g.score_min_seconds, "guidance": g.score_guidance,
                              "length_temperature": g.score_length_temperature}}

    # held-out bits per event
    out["test"] = evaluate_score_tier(data, manifest, run, "test")
    if a.other:  # the demo's genres by other composers ('' for a corpus that learned from them)
        other, skipped = extra_pieces(other_scores(Path(a.other), a.other_per_genre), genres, fps)
        out["other_corpus"] = {**tier_bits(model, other, genres, train_events), "composers": OTHER,
                               "skipped": skipped}
    else:
        out["other_corpus"] = None

    # novelty and style, tier and chain, per genre
    train_rolls = [events_to_roll(e, fps) for e in train_events]
    heldout = [p for s in ("valid", "test") for p in split_pieces(data, manifest, s, fps)]
    chain = read_score_model(run)
    out["scores"] = {}
    written: dict[str, list[tuple[int, list[int]]]] = {"tier": [], "chain": []}  # (genre id, events) per source
    for gi, genre in enumerate(genres):
        rows: dict = {}
        told = 30.0 if model.cfg.length_buckets else None  # as `strata generate --seconds 30` asks
        tier_events = [sample_events(model, gi, 30.0, seed, g.score_temperature, g.score_top_p,
                                     min_seconds=g.score_min_seconds, length_seconds=told, guidance=g.score_guidance)
                       for seed in range(a.pieces)]
        tier = [events_to_roll(e, fps) for e in tier_events]
        rolls = {"tier": [r for r in tier if r[0].any()]}  # silent scores: counted in "density", not here
        if chain is not None:
            rolls["chain"] = [r for r in (sample_roll(chain, genre, 30 * fps, seed) for seed in range(a.pieces))
                              if r is not None and r[0].any()]
        held = [events_to_roll(p.events, fps) for p in heldout if p.genre == genre]
        if held:  # what the novelty targets can reach: real held-out scores of the genre against the same training
            rows["real held-out"] = {"pieces": len(held), "novelty": novelty(held, train_rolls, fps),
                                     "style_overlap": None}
        for name, rs in rolls.items():
            rows[name] = {"pieces": len(rs), "novelty": novelty(rs, train_rolls, fps) if rs else None,
                          "style_overlap": style_overlap(rs, held, fps) if rs and held else None}
        written["tier"] += [(gi, e) for e, r in zip(tier_events, tier) if r[0].any()]
        written["chain"] += [(gi, roll_to_events(r, fps)) for r in rolls.get("chain", [])]
        rows["density"] = {"tier": note_density(tier_events),
                           "real held-out": note_density([p.events for p in heldout if p.genre == genre])}
        out["scores"][genre] = rows

    # genre by notes: is the asked genre in the scores themselves?
    real_held = [(genres.index(p.genre), list(p.events)) for p in heldout if p.genre in genres]
    out["genre_by_notes"] = {src: genre_by_score(train, real_held, pieces, len(genres))
                             for src, pieces in written.items() if pieces}

    # lengths: does the tier end its pieces, and when?
    known = train if a.lengths_from is None else load_pieces(stage_dir(Path(a.lengths_from), SCORE_KEY) / TRAIN_EVENTS)
    heard, _ = fit_score_classifier(train)  # the genre an unconditional piece's notes sound like
    out["lengths"] = {"genre": piece_lengths(model, known, genres, list(range(len(genres))), a.lengths, g, False),
                      "unconditional": piece_lengths(model, known, genres, [len(genres)], a.lengths, g, False,
                                                     classifier=heard),
                      "training_pieces": real_lengths(known, genres), "lengths_from": a.lengths_from or a.run}
    whole_held = [(genres.index(p.genre), list(p.events)) for p in heldout + (other if a.other else [])
                  if p.ended and p.genre in genres]
    learned = []
    for gi in range(len(genres)):
        mine = [(g_, ev) for g_, ev in train if g_ == gi and is_whole(ev)]
        learned += mine[::max(1, len(mine) // a.hazard_pieces)][:a.hazard_pieces]
    if model.cfg.length_head:
        out["lengths"]["genre_chosen"] = piece_lengths(model, known, genres, list(range(len(genres))), a.lengths, g,
                                                       False, chosen=True)
        out["lengths"]["unconditional_chosen"] = piece_lengths(model, known, genres, [len(genres)], a.lengths, g,
                                                               False, chosen=True, classifier=heard)
        out["length_head"] = length_head_bits(model, whole_held, train, genres)
    out["end_hazard"] = {"held_out": end_hazard(model, whole_held, genres, g.score_min_seconds),
                         "learned_from": end_hazard(model, learned, genres, g.score_min_seconds)}
    if model.cfg.length_buckets:
        out["lengths"]["genre_told"] = piece_lengths(model, known, genres, list(range(len(genres))), a.lengths, g,
                                                     True)
        out["lengths"]["unconditional_told"] = piece_lengths(model, known, genres, [len(genres)], a.lengths, g, True,
                                                             classifier=heard)

    # speed: 60 s of score on one thread, unconditional and for the first genre (guided)
    out["speed"] = score_speed(model, len(genres), g, 0.0)
    out["speed_genre"] = {"genre": genres[0], "guidance": g.score_guidance,
                          **score_speed(model, 0, g, g.score_guidance)}
    out["wall_seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(a.json, out)
    print(json.dumps({k: out[k] for k in ("test", "other_corpus", "lengths", "speed", "speed_genre", "genre_by_notes")},
                     indent=1, default=str)[:4000])
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
