"""A corpus of real recordings without MIDI: game soundtracks shipped by Debian packages (issues 17, 20).

Strata's demo corpus is rendered by FluidSynth from scores; users bring recordings.  This builds a
second corpus from two Debian packages of recorded (produced, mixed, mastered) music, one genre
each, with no MIDI beside any track: every roll the pipeline gets is estimated from the audio.

- ``orchestral``: ``wesnoth-1.16-music`` (Battle for Wesnoth's orchestral score, OGG, CC BY-SA / GPL)
- ``electronic``: ``singularity-music`` (Endgame: Singularity's ambient electronic tracks, OGG, CC BY-SA)

Install them with ``sudo apt-get install wesnoth-1.16-music singularity-music`` (about 200 MB;
``make recordings-deps``).  One excerpt per track (``--seconds`` long, starting at ``--start`` of the
track's length, so intros and fade-outs are left out) is written as 16 kHz mono WAV to
``OUT/<genre>/<track>.wav``, the layout ``strata preprocess`` reads.  Tracks shorter than
``--min-seconds`` are skipped and listed.  One excerpt per track keeps every track in one split.
``OUT/metadata.csv`` lists every file, with ``excerpt`` true for a recording cut from a longer track (a WAV
has no marker for it): the score tier learns no end of piece at the cut.

    python bench/recordings.py --out recordings/raw

Then ``strata preprocess recordings/raw recordings/data`` estimates a roll for every track
(basic-pitch), and ``strata train`` / ``bench/quality.py`` use it like the demo corpus.

``--scores GENRE=COMPOSER`` (repeatable) adds a genre of scores the demo never uses: music21's bundled works
of COMPOSER (at most ``--score-works``, each its first ``--score-seconds``), rendered with
``--score-soundfont`` (the demo renders with FluidR3) and played by the demo's program for GENRE, with
their MIDI beside them.  With two such genres the corpus has four (issue 20's corpus: genres of recordings
without MIDI beside genres of scores, so recognising a genre is not a coin toss):

    python bench/recordings.py --out other4/raw --scores folk=essenFolksong --scores renaissance=monteverdi
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.corpus.audio import AudioError, load_audio, resample, to_mono  # noqa: E402
from pipeline.io import atomic_path, atomic_write_json  # noqa: E402

RATE = 16000
ANALYSES = (".rntxt",)  # music21's roman-numeral analyses: chords of a work, not its score
SOURCES = {  # genre -> (Debian package, folder of its OGG files)
    "orchestral": ("wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music"),
    "electronic": ("singularity-music", "/usr/share/games/singularity/music"),
}


def excerpt(path: Path, seconds: float, start: float, min_seconds: float) -> np.ndarray:
    """``seconds`` of mono 16 kHz audio from ``start`` (a share of the track's length); AudioError when shorter
    than ``min_seconds``."""
    x, sr = load_audio(path)
    x = resample(to_mono(x), sr, RATE)  # (n,)
    total = len(x) / RATE
    if total < min_seconds:
        raise AudioError(path, f"{total:.1f} s, shorter than --min-seconds {min_seconds:g}")
    a = int(min(start * total, max(0.0, total - seconds)) * RATE)
    return x[a:a + int(seconds * RATE)]


def build(out: Path, seconds: float, start: float, min_seconds: float) -> dict:
    """``out/<genre>/<track>.wav`` for every track of every installed package; a summary."""
    import soundfile as sf

    summary: dict = {"genres": {}, "missing_packages": [], "skipped": [], "excerpts": []}
    for genre, (package, folder) in SOURCES.items():
        files = sorted(Path(folder).glob("*.ogg"))  # top level only (singularity's win/lose jingles are left out)
        if not files:
            summary["missing_packages"].append(package)
            print(f"warning: {folder} has no OGG file: install {package} (apt-get install {package})",
                  file=sys.stderr)
            continue
        (out / genre).mkdir(parents=True, exist_ok=True)
        n = 0
        for f in files:
            dst = out / genre / f"{f.stem}.wav"
            try:
                cut = sf.info(str(f)).duration > seconds + 1e-3  # the excerpt leaves part of the track out
            except RuntimeError:  # unreadable: ``excerpt`` below reports it
                cut = False
            if not dst.is_file():
                try:
                    x = excerpt(f, seconds, start, min_seconds)
                except AudioError as e:
                    summary["skipped"].append({"path": f"{package}/{f.name}", "reason": str(e).split(": ", 1)[-1]})
                    continue
                with atomic_path(dst, suffix=".wav") as tmp:
                    sf.write(str(tmp), x, RATE, subtype="PCM_16")
            n += 1
            if cut:
                summary["excerpts"].append(dst.relative_to(out).as_posix())
        summary["genres"][genre] = {"package": package, "tracks": n}
    return summary


def write_metadata(out: Path, excerpts: list[str]) -> Path:
    """``out/metadata.csv`` (``path,genre,midi,excerpt``) for every ``out/<genre>/*.wav``: the MIDI beside a file,
    and ``excerpt`` true for the recordings in ``excerpts`` (a scored genre's cut is marked in its MIDI)."""
    import csv

    cut = set(excerpts)
    path = out / "metadata.csv"
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "genre", "midi", "excerpt"])
        for wav in sorted(out.glob("*/*.wav")):
            rel = wav.relative_to(out).as_posix()
            midi = wav.with_suffix(".mid")
            w.writerow([rel, wav.parent.name, midi.relative_to(out).as_posix() if midi.is_file() else "",
                        "true" if rel in cut else "false"])
    return path


def build_scores(out: Path, scores: dict[str, str], works: int, seconds: float, soundfont: str) -> dict:
    """``out/<genre>/<work>.wav`` + ``.mid`` for up to ``works`` music21 works of each genre's composer (none of
    them a demo track), rendered with ``soundfont``; {genre: {"composer", "tracks"}} and skipped works."""
    from music21 import common, corpus

    from pipeline.corpus.demo_data import Work, load_candidates, output_paths, render_work
    from pipeline.corpus.midi import find_soundfont

    font = str(find_soundfont(soundfont if "/" in soundfont else find_soundfont().parent / soundfont))
    demo = load_candidates()
    listed, programs = {w.corpus_path for w in demo}, {w.genre: w.program for w in demo}
    root = Path(common.getCorpusFilePath())
    summary: dict = {"genres": {}, "skipped": [], "soundfont": Path(font).name}
    for genre, composer in scores.items():
        paths = [Path(p).relative_to(root).as_posix() for p in sorted(corpus.getComposer(composer))]
        n, names = 0, set()
        for rel in (p for p in paths if p not in listed and not p.endswith(ANALYSES)):
            if n >= works:
                break
            work = Work(genre, rel, programs.get(genre, 0))
            if work.name in names:  # the same work in another format (one file per name)
                continue
            names.add(work.name)
            if all(p.is_file() for p in output_paths(work, out)):
                n += 1
                continue
            try:
                render_work(work, out, seconds, RATE, font)
                n += 1
            except Exception as e:  # noqa: BLE001 - a work music21 or FluidSynth cannot render: skipped, listed
                summary["skipped"].append({"path": rel, "reason": f"{type(e).__name__}: {e}"[:200]})
        summary["genres"][genre] = {"composer": composer, "tracks": n}
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="recordings/raw", help="corpus folder (<genre>/<track>.wav)")
    ap.add_argument("--seconds", type=float, default=60.0, help="excerpt length")
    ap.add_argument("--start", type=float, default=0.1, help="excerpt start, as a share of the track's length")
    ap.add_argument("--min-seconds", type=float, default=30.0, help="shorter tracks are skipped")
    ap.add_argument("--scores", action="append", default=[], metavar="GENRE=COMPOSER",
                    help="also a genre of music21's works by COMPOSER, rendered, with their MIDI (repeatable)")
    ap.add_argument("--score-works", type=int, default=20, help="works per --scores genre")
    ap.add_argument("--score-seconds", type=float, default=45.0, help="each work's first seconds (as the demo)")
    ap.add_argument("--score-soundfont", default="TimGM6mb.sf2", help="soundfont of the --scores genres")
    a = ap.parse_args(argv)
    out = Path(a.out)
    scores = dict(s.split("=", 1) for s in a.scores if "=" in s)
    if len(scores) != len(a.scores):
        ap.error("--scores takes GENRE=COMPOSER")
    summary = build(out, a.seconds, a.start, a.min_seconds)
    summary.update(seconds=a.seconds, start=a.start, min_seconds=a.min_seconds)
    if scores:
        summary["scores"] = build_scores(out, scores, a.score_works, a.score_seconds, a.score_soundfont)
    write_metadata(out, summary["excerpts"])
    atomic_write_json(out / "recordings.json", summary)
    print(json.dumps(summary, indent=1))
    return 0 if summary["genres"] or summary.get("scores", {}).get("genres") else 1


if __name__ == "__main__":
    sys.exit(main())
