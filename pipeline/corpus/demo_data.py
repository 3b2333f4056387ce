"""A demo corpus with no download: scores bundled with music21, rendered by FluidSynth.

``build_demo_corpus(out)`` writes ``out/<genre>/<name>.wav`` and beside it ``<name>.mid``, the
exact MIDI that was rendered (cropped to ``max_seconds``, instrument replaced by the genre's GM
program), so the WAV's sample 0 is the MIDI's time 0.  Candidate works are read in order from
``pipeline/data/demo_corpus.csv`` (package data, so an installed ``strata`` finds it; columns
``genre,corpus_path,program``); per genre the first ``per_genre`` works that parse and render
are used, so the selection is deterministic.  A work that fails is skipped and reported;
existing outputs are kept, so a rerun only does the rest.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import mido
import soundfile as sf

from pipeline.errors import ParameterError
from pipeline.io import atomic_path

if TYPE_CHECKING:
    import music21

DEMO_CSV = Path(__file__).resolve().parents[1] / "data" / "demo_corpus.csv"  # package data
DEFAULT_PER_GENRE = 8
DEFAULT_MAX_SECONDS = 45.0
MAX_BPM_DEFAULT = 120.0  # music21's tempo when a score has no metronome mark


@dataclass(frozen=True)
class Work:
    """One candidate: a music21 corpus path rendered with a GM program into a genre folder."""

    genre: str
    corpus_path: str
    program: int

    @property
    def name(self) -> str:
        """File stem: the corpus path without extension, '/' -> '-' (``bach-bwv66.6``)."""
        stem = re.sub(r"\.(mxl|xml|musicxml|krn|abc|mid|midi|rntxt)$", "", self.corpus_path)
        return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-")


def load_candidates(path: str | Path = DEMO_CSV) -> list[Work]:
    """Rows of the candidates CSV, in file order."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ParameterError(f"{path}: cannot read demo corpus list ({e.strerror or e})") from None
    works = []
    for i, row in enumerate(rows, start=2):
        try:
            works.append(Work(row["genre"].strip(), row["corpus_path"].strip(), int(row["program"])))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ParameterError(f"{path}:{i}: expected columns genre,corpus_path,program") from None
    return works


# ----------------------------------------------------------------------------- one work


def render_work(work: Work, out_dir: str | Path, max_seconds: float, sr: int, soundfont: str | None) -> dict:
    """Parse, crop, re-instrument and render one work; returns ``{"seconds": s}`` of the WAV."""
    # local: keeps torch out of `import pipeline.corpus.demo_data` until this runs
    from pipeline.corpus.midi import render_midi

    wav, mid_path = output_paths(work, out_dir)
    write_work_midi(work, mid_path, max_seconds)
    render_midi(mid_path, wav, sr=sr, soundfont=soundfont)
    return {"seconds": sf.info(str(wav)).duration}


def write_work_midi(work: Work, dst: Path, max_seconds: float) -> Path:
    """The work's first ``max_seconds`` as a MIDI file at ``dst`` (atomically), played by its GM program."""
    # local: keeps torch out of `import pipeline.corpus.demo_data` until this runs
    from pipeline.corpus.midi import crop_midi, set_program

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="strata-demo-") as tmp:
        full = Path(tmp) / "score.mid"
        score_to_midi(work.corpus_path, full, max_seconds)
        mid = set_program(crop_midi(mido.MidiFile(str(full)), max_seconds), work.program)
        with atomic_path(dst, suffix=".mid") as t:
            mid.save(str(t))
    return dst


def score_to_midi(corpus_path: str, dst: Path, max_seconds: float) -> None:
    """music21 corpus work -> MIDI file of (at least) its first ``max_seconds``.

    Writing a long movement is slow, so a long score is first cut at a bar that is surely past
    ``max_seconds`` (at its fastest metronome mark) and its repeat signs are dropped (a cut
    repeat cannot be expanded); the exact cut in seconds is done on the MIDI.  A short score is
    written whole, repeats played; if its repeats are malformed, without them.
    """
    # local: keeps music21 out of `import pipeline.corpus.demo_data` until this runs
    from music21 import corpus, stream

    score = corpus.parse(corpus_path)
    if isinstance(score, stream.Opus):  # a multi-tune file: its first tune
        score = score.scores[0]
    part = score.parts[0] if score.parts else score
    marks = [m.getQuarterBPM() for m in score.flatten().getElementsByClass("MetronomeMark")]
    quarters = max_seconds * max([MAX_BPM_DEFAULT] + [b for b in marks if b]) / 60.0 * 1.25
    numbers = [m.number for m in part.getElementsByClass("Measure") if m.offset > quarters]
    if numbers:
        _strip_repeats(score.measures(0, numbers[0])).write("midi", fp=str(dst))
        return
    try:
        score.write("midi", fp=str(dst))
    except Exception:  # badly formed repeats: play it straight through
        _strip_repeats(score).write("midi", fp=str(dst))


def _strip_repeats(score: "music21.stream.Stream") -> "music21.stream.Stream":
    """Remove repeat barlines, repeat marks and volta brackets (in place), so it plays once."""
    # local: keeps music21 out of `import pipeline.corpus.demo_data` until this runs
    from music21 import bar, repeat, spanner

    for m in score.recurse().getElementsByClass("Measure"):
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(m, side), bar.Repeat):
                setattr(m, side, None)
    for kind in (repeat.RepeatMark, spanner.RepeatBracket):
        for el in list(score.recurse().getElementsByClass(kind)):
            if el.activeSite is not None:
                el.activeSite.remove(el)
    return score


def output_paths(work: Work, out_dir: str | Path) -> tuple[Path, Path]:
    folder = Path(out_dir) / work.genre
    return folder / f"{work.name}.wav", folder / f"{work.name}.mid"


def _done(work: Work, out_dir: Path) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in output_paths(work, out_dir))


# ----------------------------------------------------------------------------- the corpus


def build_demo_corpus(
    out_dir: str | Path,
    per_genre: int | None = DEFAULT_PER_GENRE,
    soundfont: str | Path | None = None,
    progress: bool = True,
    genres: Sequence[str] | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    sr: int = 16000,
    workers: int | None = None,
    candidates: str | Path = DEMO_CSV,
) -> dict[str, Any]:
    """Render ``per_genre`` works per genre into ``out_dir/<genre>/<name>.{wav,mid}``.

    Returns a summary: ``{"out", "seconds" (wall time), "genres": {genre: {"tracks", "minutes",
    "new"}}, "tracks", "minutes", "skipped": [{"genre", "corpus_path", "reason"}], "soundfont",
    "warnings"}`` (a soundfont other than the preferred one, also printed as one line).
    ``workers`` processes render in parallel (default: up to 2).
    """
    # local: keeps torch out of `import pipeline.corpus.demo_data` until this runs
    from pipeline.corpus.midi import PREFERRED_SOUNDFONTS, find_soundfont, fluidsynth_program

    t0 = time.time()
    per_genre = DEFAULT_PER_GENRE if per_genre is None else int(per_genre)
    if per_genre < 1:
        raise ParameterError(f"per_genre must be at least 1, got {per_genre}")
    out_dir = Path(out_dir)
    works = load_candidates(candidates)
    known = list(dict.fromkeys(w.genre for w in works))
    chosen = list(genres) if genres is not None else known
    unknown = [g for g in chosen if g not in known]
    if unknown:
        raise ParameterError(f"unknown genre(s) {', '.join(unknown)}; known: {', '.join(known)}")
    font = str(find_soundfont(soundfont))  # fail early, before any work
    fluidsynth_program()  # else every work would be skipped for the same reason
    queues = {g: deque(w for w in works if w.genre == g) for g in chosen}
    say: Callable[[str], None] = print if progress else (lambda _: None)
    warnings = [] if soundfont or Path(font).name == PREFERRED_SOUNDFONTS[0] else [
        f"warning: {PREFERRED_SOUNDFONTS[0]} not found; rendering with {font} (the corpus sounds different)"]
    for line in warnings:
        print(line, file=sys.stderr, flush=True)
    state = _Build(out_dir, per_genre, queues, say)
    workers = workers or min(2, os.cpu_count() or 1)
    args = (out_dir, max_seconds, sr, font)
    if workers <= 1:
        state.run_serial(args)
    else:
        state.run_pool(args, workers)
    summary = {**state.summary(time.time() - t0), "soundfont": font, "warnings": warnings}
    for g, s in summary["genres"].items():
        say(f"{g}: {s['tracks']} tracks, {s['minutes']:.1f} min ({s['new']} new)")
    say(f"demo corpus: {summary['tracks']} tracks, {summary['minutes']:.1f} min in {out_dir} "
        f"({summary['seconds']:.0f} s, {len(summary['skipped'])} skipped)")
    return summary


class _Build:
    """Bookkeeping of one build: which works are done, pending, or skipped, per genre."""

    def __init__(self, out_dir: Path, per_genre: int, queues: dict[str, deque], say: Callable[[str], None]):
        self.out_dir, self.per_genre, self.queues, self.say = out_dir, per_genre, queues, say
        self.done: dict[str, list[Work]] = {g: [] for g in queues}
        self.new: dict[str, int] = {g: 0 for g in queues}
        self.in_flight: dict[str, int] = {g: 0 for g in queues}
        self.skipped: list[dict[str, str]] = []

    def next_work(self, genre: str) -> Work | None:
        """The genre's next candidate to render, or None when enough are done or in flight.

        Candidates whose outputs already exist are counted as done on the way (kept).
        """
        queue = self.queues[genre]
        while queue and len(self.done[genre]) + self.in_flight[genre] < self.per_genre:
            work = queue.popleft()
            if _done(work, self.out_dir):
                self.done[genre].append(work)
                self.say(f"[{genre} {len(self.done[genre])}/{self.per_genre}] {work.corpus_path}: kept")
                continue
            self.in_flight[genre] += 1
            return work
        return None

    def initial(self) -> list[Work]:
        todo = []
        for g in self.queues:
            while (work := self.next_work(g)) is not None:
                todo.append(work)
        return todo

    def finished(self, work: Work, result: dict | None, error: BaseException | None) -> Work | None:
        """Record one outcome; a failure asks for the genre's next candidate."""
        g = work.genre
        self.in_flight[g] -= 1
        if error is None:
            self.done[g].append(work)
            self.new[g] += 1
            self.say(f"[{g} {len(self.done[g])}/{self.per_genre}] {work.corpus_path} -> "
                     f"{g}/{work.name}.wav ({result['seconds']:.1f} s)")
            return None
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        self.skipped.append({"genre": g, "corpus_path": work.corpus_path, "reason": reason})
        self.say(f"[{g}] {work.corpus_path}: skipped ({reason})")
        for p in output_paths(work, self.out_dir):  # never leave half a pair
            p.unlink(missing_ok=True)
        return self.next_work(g)

    def run_serial(self, args: tuple) -> None:
        pending = deque(self.initial())
        while pending:
            work = pending.popleft()
            try:
                result, error = render_work(work, *args), None
            except Exception as e:  # skip and report, go on
                result, error = None, e
            retry = self.finished(work, result, error)
            if retry is not None:
                pending.append(retry)

    def run_pool(self, args: tuple, workers: int) -> None:
        todo = self.initial()
        if not todo:
            return
        ctx = multiprocessing.get_context("spawn")  # safe beside threads (Prefect, torch)
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx)
        try:
            running: dict[Future, Work] = {pool.submit(render_work, w, *args): w for w in todo}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    work = running.pop(fut)
                    error = fut.exception()
                    retry = self.finished(work, None if error else fut.result(), error)
                    if retry is not None:
                        running[pool.submit(render_work, retry, *args)] = retry
        except BaseException:  # Ctrl-C / SIGTERM: drop the queue at once (the command stops the workers)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def summary(self, seconds: float) -> dict[str, Any]:
        genres = {}
        for g, works in self.done.items():
            secs = sum(sf.info(str(output_paths(w, self.out_dir)[0])).duration for w in works)
            genres[g] = {"tracks": len(works), "minutes": round(secs / 60.0, 2), "new": self.new[g]}
        return {
            "out": str(self.out_dir),
            "seconds": round(seconds, 1),
            "genres": genres,
            "tracks": sum(s["tracks"] for s in genres.values()),
            "minutes": round(sum(s["minutes"] for s in genres.values()), 2),
            "skipped": self.skipped,
        }


# ----------------------------------------------------------------------------- extra scores (score tier)

DEFAULT_EXTRA_PER_GENRE = 120
DEFAULT_EXTRA_SECONDS = 600.0  # whole works: their own endings teach the score tier where pieces end


def extra_candidates(candidates: str | Path = DEMO_CSV) -> list[Work]:
    """music21 works by the demo genres' composers that are NOT in the demo corpus list, in sorted order.

    A genre's composers are the first path parts of its rows (``bach`` for ``bach/bwv1.6.mxl``).
    None of these works is rendered as audio, so none can be a valid or test track of the demo:
    the score tier may learn from them (``--extra-scores``) without seeing a held-out piece."""
    # local: keeps music21 out of `import pipeline.corpus.demo_data` until this runs
    from music21 import common, corpus

    works = load_candidates(candidates)
    listed = {w.corpus_path for w in works}
    root = Path(common.getCorpusFilePath())  # music21's bundled corpus folder
    out = []
    for genre in dict.fromkeys(w.genre for w in works):
        program = next(w.program for w in works if w.genre == genre)
        composers = dict.fromkeys(w.corpus_path.split("/")[0] for w in works if w.genre == genre)
        for composer in composers:
            for p in sorted(corpus.getComposer(composer)):
                rel = Path(p).relative_to(root).as_posix()
                if rel not in listed:
                    out.append(Work(genre, rel, program))
    return out


def _score_work(work: Work, out_dir: Path, max_seconds: float) -> dict:
    """One work -> ``out_dir/<genre>/<name>.mid`` (its first ``max_seconds``, the genre's program)."""
    return {"path": str(write_work_midi(work, out_dir / work.genre / f"{work.name}.mid", max_seconds))}


def build_extra_scores(out_dir: str | Path, per_genre: int = DEFAULT_EXTRA_PER_GENRE,
                       max_seconds: float = DEFAULT_EXTRA_SECONDS, workers: int | None = None,
                       progress: bool = True, candidates: str | Path = DEMO_CSV) -> dict[str, Any]:
    """MIDI files of up to ``per_genre`` extra works per demo genre into ``out_dir/<genre>/`` (the layout
    ``strata train --extra-scores`` reads).  Existing files are kept; failures are skipped and listed.
    Returns ``{"out", "genres": {genre: files}, "skipped": [{"corpus_path", "reason"}], "seconds"}``."""
    t0 = time.time()
    out_dir = Path(out_dir)
    say: Callable[[str], None] = print if progress else (lambda _: None)
    by_genre: dict[str, list[Work]] = {}
    for w in extra_candidates(candidates):
        by_genre.setdefault(w.genre, []).append(w)
    chosen = [w for ws in by_genre.values() for w in ws[:per_genre]]
    todo = [w for w in chosen if not (out_dir / w.genre / f"{w.name}.mid").is_file()]
    skipped: list[dict[str, str]] = []
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers or min(2, os.cpu_count() or 1), len(todo)),
                                 mp_context=ctx) as pool:
            futures = {pool.submit(_score_work, w, out_dir, max_seconds): w for w in todo}
            for i, fut in enumerate(futures, 1):
                w = futures[fut]
                error = fut.exception()
                if error is not None:
                    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                    skipped.append({"genre": w.genre, "corpus_path": w.corpus_path, "reason": reason})
                if progress and (i % 20 == 0 or i == len(todo)):
                    say(f"extra scores: {i}/{len(todo)} converted ({len(skipped)} skipped)")
    genres = {g: len(list((out_dir / g).glob("*.mid"))) for g in by_genre}
    say(f"extra scores: {sum(genres.values())} MIDI files in {out_dir} ({genres})")
    return {"out": str(out_dir), "genres": genres, "skipped": skipped, "seconds": round(time.time() - t0, 1)}
