"""Held-out evaluation of a run (DESIGN 6): exact bits per sample per stage, ablations, baselines.

Every sample of every held-out track is scored with its full left context in one teacher-forced
pass per track (long tracks in chunks whose windows reach as far back and ahead as any path of
the stage does, ``overlap``, so the result is the same as one pass).  The conditioning ablations
ride in the same pass as extra batch rows:

- row 0, the stage as trained: genre, tier below, roll (a track without roll: roll dropped);
- row 1, without conditioning: "no genre" id, ``drop_below`` and ``drop_roll`` all True, the way
  conditioning dropout removes them in training (never zeros);
- row 2 (stages with a history stack), short context: full conditioning, ``drop_history`` True.

Speed (2-core CPU, tiny preset): the work is split into (stage, track) units and baseline fits,
run by ``workers`` threads with one torch thread and one BLAS thread each (``pipeline.runtime.
worker_threads``; torch and numpy release
the GIL inside their ops; one intra-op pool of 2 threads over small tensors mostly waits on
itself, and OpenBLAS threads spin against the workers), and tracks are scored
in chunks of ``DEFAULT_CHUNK`` samples (or 4x the overlap) so that the (rows, chunk, 256)
tensors of the hybrid head stay in cache instead of being allocated and paged in afresh.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from models.conditioning import Conditioning
from pipeline.config import StrataConfig, stage_factor
from pipeline.corpus.batches import alignment_unit, window
from pipeline.corpus.dataset import iter_tracks, load_manifest
from pipeline.errors import ParameterError
from pipeline.run import export_extra, load_run
from pipeline.runtime import Progress, torch_threads, worker_threads

DEFAULT_CHUNK = 8192  # stage samples scored per pass (at least 4x the overlap: see stage_chunk)


def _align(cfg: StrataConfig, k: int, stage) -> int:
    """Chunk starts are multiples of lcm(f, rate / roll_fps, history pool)."""
    return alignment_unit(cfg, k, stage.history.pool if stage.history is not None else 1)


def _rows(stage, item: dict, n_genres: int, variants: list[str]):
    """Batch the variants of one window: the ``Conditioning`` of ``stage(x, cond)``, B = len(variants).

    "full": as trained; "uncond": no genre, tier below and roll dropped from every part (the linear
    path on its fallback taps); "uncond_network": the same for the network only (the linear path
    keeps the tier below); "uncond_linear": only the linear path without the tier below (fallback
    taps, the network fully conditioned); "no_roll" / "no_genre": only that input dropped (the roll
    from every part: network and score taps); "short": the history stack cut off.
    """
    B = len(variants)
    net = torch.tensor([v in ("uncond", "uncond_network") for v in variants])  # (B,) network unconditioned
    kw: dict[str, Any] = {}
    genre = int(item["genre"])
    kw["genre"] = torch.where(net | torch.tensor([v == "no_genre" for v in variants]), n_genres, genre)
    if stage.use_below:
        kw["below"] = item["below"][None].expand(B, -1)  # (B, T // f)
        kw["drop_below"] = net
        kw["drop_below_linear"] = torch.tensor([v in ("uncond", "uncond_linear") for v in variants])
    if stage.use_roll:
        kw["roll"] = item["roll"][None].expand(B, -1, -1)  # (B, 256, F)
        kw["drop_roll"] = net | torch.tensor([v == "no_roll" for v in variants]) | (not item["has_roll"])
    if stage.history is not None:
        kw["drop_history"] = torch.tensor([v == "short" for v in variants])

    return Conditioning(**kw)


def _stage_x(stage, x: torch.Tensor, bits: int) -> torch.Tensor:
    return stage.head.codes_to_input(x, bits)  # (B, T) what the stage reads


def overlap(stage, unit: int) -> tuple[int, int]:
    """(back, ahead): stage samples a chunk's window must hold before its first scored sample and
    after its last for the scores to equal one pass over the whole track.

    ``back`` adds up every path into the past (so it bounds the longest): the main stack's
    receptive field; the history stack's reach (``history_receptive_field``, which includes the
    main stack); the conditioning stack's receptive field at the conditioning rate times its
    upsampling factor, plus the stage's lookahead (the window's first conditioning inputs are
    padding in a chunk, real data in one pass); the linear path's own-past taps, its
    adaptive-scale window of residuals (each read with the taps) and its tier-below window.
    ``ahead`` is the lookahead (tier below and roll).  Both get one alignment ``unit`` of slack.
    """
    back = stage.receptive_field + stage.history_receptive_field
    cond = stage.conditioning
    if cond is not None:
        back += cond.receptive_field * cond.up + stage.lookahead
    lin = getattr(stage, "linear", None)
    if lin is not None:
        back += lin.order + lin.adapt_taps
        if lin.use_below:
            back += (lin.back + 1) * lin.factor
    return back + unit, stage.lookahead + unit


def stage_chunk(stage, cfg: StrataConfig, k: int) -> int:
    """Default chunk of stage k: ``DEFAULT_CHUNK`` or 4x the overlap (at most 20 % recomputed)."""
    unit = _align(cfg, k, stage)
    back, ahead = overlap(stage, unit)
    return -(-max(DEFAULT_CHUNK, 4 * (back + ahead)) // unit) * unit


@torch.inference_mode()
def score_track(stage, item: dict, cfg: StrataConfig, k: int, n_genres: int, variants: list[str],
                chunk: int | None = None, stop: int | None = None,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Bits of samples [0, stop) of a whole track for each variant: (len(variants), stop).

    ``stop`` (default: the whole track) only limits what is scored: the samples after it still
    serve as lookahead, so the bits are those of a pass over the whole track.  ``chunk``: stage
    samples per pass (default ``stage_chunk``); ``progress(samples)`` is called after each pass.
    """
    n = item["x"].shape[0]
    stop = n if stop is None else max(0, min(int(stop), n))
    f, hop = stage_factor(cfg, k), cfg.stages[k].rate // cfg.data.roll_fps
    unit = _align(cfg, k, stage)
    back, ahead = overlap(stage, unit)
    chunk = chunk or stage_chunk(stage, cfg, k)
    out = torch.empty(len(variants), stop)
    s = 0
    while s < stop:
        e = min(stop, s + chunk)
        a = max(0, (s - back) // unit * unit)
        b = n if e + ahead >= n else -(-(e + ahead) // unit) * unit
        w = window(item, a, b, f, hop)
        x = _stage_x(stage, w["x"][None].expand(len(variants), -1), cfg.data.mu_bits)  # (B, b - a)
        logits = stage(x, _rows(stage, w, n_genres, variants))  # (B, C, b - a)
        bits = stage.head.nll_bits(logits, x)  # (B, b - a)
        out[:, s:e] = bits[:, s - a : e - a].float()
        if progress is not None:
            progress(e - s)
        s = e
    return out


def variants_of(stage) -> list[str]:
    """The rows scored for a stage: as trained, without conditioning, and its parts: the network
    and the linear path apart (a tier below), the roll and the genre apart (a stage without a tier
    below that reads the roll), short context (a history stack)."""
    rows = ["full", "uncond"]
    if stage.use_below and stage.linear is not None:
        rows += ["uncond_network", "uncond_linear"]
    elif stage.use_roll:
        rows += ["no_roll"] + (["no_genre"] if stage.use_genre else [])
    return rows + (["short"] if stage.history is not None else [])


def scored_samples(item: dict, cfg: StrataConfig, k: int, max_seconds: float | None) -> int:
    """Samples of a track scored with ``max_seconds`` (the first S seconds; all when None)."""
    n = item["x"].shape[0]
    return n if max_seconds is None else min(n, int(max_seconds * cfg.stages[k].rate))


# JSON key of each variant's bits per sample
VARIANT_KEYS = {"full": "bits_per_sample", "uncond": "bits_per_sample_without_conditioning",
                "uncond_network": "bits_per_sample_network_without_conditioning",
                "uncond_linear": "bits_per_sample_linear_without_conditioning",
                "no_roll": "bits_per_sample_without_roll", "no_genre": "bits_per_sample_without_genre",
                "short": "bits_per_sample_short_context"}


def stage_result(stage, cfg: StrataConfig, k: int, variants: list[str], totals: torch.Tensor, n: int,
                 tracks: int, seconds: float) -> dict:
    """A dict for the JSON's "stages" from summed bits (len(variants),) over ``n`` samples."""
    per = (totals.double() / max(n, 1)).tolist()
    res: dict[str, Any] = {"index": k, "rate": cfg.stages[k].rate, "samples": n, "tracks": tracks,
                           "seconds": seconds}
    res.update({VARIANT_KEYS[v]: per[i] for i, v in enumerate(variants)})
    res["receptive_field"] = stage.receptive_field
    return res


def evaluate_run(data_dir, run_dir, split: str = "test", max_seconds_per_track: float | None = None,
                 chunk: int | None = None, baseline_rows: int = 200_000, workers: int | None = None,
                 progress: bool = True) -> dict:
    """The evaluation JSON of DESIGN 6 for the exported stages of ``run_dir`` on ``split``.

    ``max_seconds_per_track``: score the first S seconds of every track (exactly: what follows
    still serves as lookahead); recorded as ``max_seconds``.  ``workers``: threads (default: the
    torch threads of ``pipeline.runtime.torch_threads``, all cores unless STRATA_TORCH_THREADS says
    otherwise), each running (stage, track) units and baseline fits with one torch thread.
    ``progress``: a bar per stage with ETA on a terminal, otherwise a line per finished stage.
    """
    if split not in ("train", "valid", "test"):
        raise ParameterError(f"split {split!r}: expected train, valid or test")
    if max_seconds_per_track is not None and not max_seconds_per_track > 0:
        raise ParameterError(f"max seconds per track {max_seconds_per_track}: must be > 0")
    return RunEvaluation(data_dir, run_dir, split, max_seconds_per_track, chunk, baseline_rows, workers,
                         progress).run()


class RunEvaluation:
    """One evaluation: setup (the run, the manifest, the progress parts), jobs (one per (stage, track)
    and per baseline fit, run by worker threads) and the result (the JSON)."""

    def __init__(self, data_dir, run_dir, split: str, max_seconds: float | None, chunk: int | None,
                 baseline_rows: int, workers: int | None, progress: bool):
        self.data_dir, self.run_dir, self.split, self.max_seconds = data_dir, Path(run_dir), split, max_seconds
        self.chunk, self.baseline_rows = chunk, baseline_rows
        run = load_run(self.run_dir, partial=True)
        self.cfg, self.stages = run.cfg, run.by_index()
        self.manifest = load_manifest(data_dir)
        self.n_genres = len(self.manifest["genres"])
        self.workers = max(1, int(workers or torch_threads()))
        self.order = sorted(self.stages, key=lambda k: -self.cfg.stages[k].rate)  # the costliest stage first
        self.labels = {k: f"stage {k} ({self.cfg.stages[k].rate} Hz)" for k in self.order}
        self.meter = self._meter(progress)
        self.scores: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}  # (k, track) -> (summed bits, samples)
        self.busy: dict[str, float] = {}
        self.linear: dict[int, dict] = {}
        self.fine: dict[str, Any] = {}
        self.score_tier: dict | None = None

    def _meter(self, progress: bool):
        n_tracks = sum(1 for t in self.manifest["tracks"] if t["split"] == self.split)
        meter = Progress(progress, title=f"evaluate: {len(self.stages)} stages on '{self.split}', "
                         f"{self.workers} worker(s)", every=math.inf, prefix="evaluate: ")  # lines when done
        for k in self.order:
            total = _split_samples(self.manifest, self.cfg, k, self.split, self.max_seconds)
            meter.add(self.labels[k], total, units=n_tracks)
        meter.add("baselines", len(self.stages) + 1, units=len(self.stages) + 1, unit="fits")
        return meter

    # ------------------------------------------------------------------------- jobs

    def timed(self, key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        with self.meter.lock:
            self.busy[key] = self.busy.get(key, 0.0) + time.perf_counter() - t0
        return out

    def neural(self, k: int, i: int, item: dict) -> None:
        stage, m, label = self.stages[k], scored_samples(item, self.cfg, k, self.max_seconds), self.labels[k]
        bits = self.timed(f"stage{k}/neural_s", lambda: score_track(
            stage, item, self.cfg, k, self.n_genres, variants_of(stage), self.chunk, stop=m,
            progress=lambda d: self.meter.update(label, advance=d)))
        self.scores[(k, i)] = (bits.double().sum(dim=1), m)
        self.meter.unit_done(label)

    def lin_baseline(self, k: int) -> None:
        # local: keeps scipy out of `import pipeline.evaluation.evaluate` until this runs
        from pipeline.evaluation.baselines import stage_linear_baseline

        self.linear[k] = self.timed(f"stage{k}/linear_s", lambda: stage_linear_baseline(
            self.data_dir, self.manifest, self.cfg, k, self.split, max_rows=self.baseline_rows,
            max_seconds=self.max_seconds))
        self.meter.unit_done("baselines", 1)

    def fine_baselines(self) -> None:
        # local: keeps scipy out of `import pipeline.evaluation.evaluate` until this runs
        from pipeline.evaluation.baselines import fine_tier_baselines

        self.fine.update(self.timed("baselines_s", lambda: fine_tier_baselines(
            self.data_dir, self.manifest, self.cfg, self.split, max_rows=self.baseline_rows,
            max_seconds=self.max_seconds)))
        self.meter.unit_done("baselines", 1)

    def jobs(self) -> Iterator[Callable[[], None]]:
        """Tracks are loaded as workers ask for them."""
        for k in self.order:
            for i, item in enumerate(iter_tracks(self.data_dir, self.cfg, k, self.split, self.manifest)):
                yield lambda k=k, i=i, item=item: self.neural(k, i, item)
        for k in self.order:
            yield lambda k=k: self.lin_baseline(k)
        yield self.fine_baselines
        yield self.score_tier_job

    def score_tier_job(self) -> None:
        """The score tier's bits per event against its n-gram baselines (``pipeline.evaluation.score_tier_bits``)."""
        # local: keeps accelerate out of `import pipeline.evaluation.evaluate` until this runs
        from pipeline.evaluation.score_tier_bits import evaluate_score_tier

        self.score_tier = self.timed("score_tier_s", lambda: evaluate_score_tier(
            self.data_dir, self.manifest, self.run_dir, self.split))

    def run(self) -> dict:
        t_start = time.perf_counter()
        try:
            with worker_threads():
                _run_jobs(self.jobs(), self.workers)
        finally:
            self.meter.close()
        return self.result(time.perf_counter() - t_start)

    # ------------------------------------------------------------------------- result

    def stage_row(self, k: int) -> dict:
        stage, variants = self.stages[k], variants_of(self.stages[k])
        keys = sorted(i for kk, i in self.scores if kk == k)
        totals = sum((self.scores[(k, i)][0] for i in keys), torch.zeros(len(variants), dtype=torch.float64))
        n = sum(self.scores[(k, i)][1] for i in keys)
        res = stage_result(stage, self.cfg, k, variants, totals, n, len(keys), n / self.cfg.stages[k].rate)
        res["linear_baseline_bits_per_sample"] = self.linear[k]["bits_per_sample"]
        extra = export_extra(self.run_dir, k)
        res["valid_bits"], res["step"] = extra.get("valid_bits"), extra.get("step")
        return res

    def result(self, wall: float) -> dict:
        rows = [self.stage_row(k) for k in sorted(self.stages)]
        complete = sorted(self.stages) == list(range(len(self.cfg.stages)))
        n_fine = rows[-1]["samples"]
        cascade = sum(r["bits_per_sample"] * r["samples"] for r in rows) / max(n_fine, 1) if complete else None
        timings = {key: round(self.busy[key], 3) for key in sorted(self.busy)}
        timings.update(wall_s=round(wall, 3), workers=self.workers)
        return {
            "split": self.split,
            "tracks": rows[0]["tracks"],
            "seconds": rows[-1]["seconds"],
            "stages": rows,
            "cascade_bits_per_sample": cascade,
            "baselines": self.fine,
            "score_tier": self.score_tier,
            "max_seconds": self.max_seconds,
            "timings": timings,
        }


def _split_samples(manifest: dict, cfg: StrataConfig, k: int, split: str, max_seconds: float | None) -> int:
    """Samples of stage k that the evaluation scores on ``split`` (for the progress display)."""
    rate = cfg.stages[k].rate
    hop = alignment_unit(cfg, k)
    total = 0
    for t in manifest["tracks"]:
        if t["split"] == split:
            n = int(t["samples"][str(rate)]) // hop * hop
            total += n if max_seconds is None else min(n, int(max_seconds * rate))
    return total


def _run_jobs(jobs: Iterator[Callable[[], None]], workers: int) -> None:
    """Run ``jobs`` on ``workers`` threads, each pulling the next job when it is free (so at most
    ``workers`` tracks are loaded at a time); the first error stops the rest and is re-raised."""
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop() -> None:
        while True:
            with lock:
                if errors:
                    return
                try:
                    job = next(jobs)
                except StopIteration:
                    return
                except BaseException as e:  # noqa: BLE001 - loading a track failed: stop everyone
                    errors.append(e)
                    return
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                with lock:
                    errors.append(e)
                return

    if workers == 1:
        loop()
    else:
        threads = [threading.Thread(target=loop, name=f"evaluate-{i}", daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def stages_table(result: dict) -> list[dict]:
    """Rows for a table artifact / printout."""
    out = []
    for r in result["stages"]:
        out.append({
            "stage": r["index"], "rate": r["rate"], "bits/sample": round(r["bits_per_sample"], 4),
            "without conditioning": round(r["bits_per_sample_without_conditioning"], 4),
            "short context": (round(r["bits_per_sample_short_context"], 4)
                              if "bits_per_sample_short_context" in r else None),
            "linear baseline": round(r["linear_baseline_bits_per_sample"], 4),
        })
    return out
