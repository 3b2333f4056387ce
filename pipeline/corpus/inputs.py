"""Discovery of raw inputs (DESIGN 1): which files under a raw folder become tracks.

Layout ``RAW/<genre>/<name>.<ext>`` (+ ``<name>.mid``), or ``RAW/metadata.csv`` with columns
``path,genre[,midi][,excerpt]``.  Entries that cannot be inputs are reported (``skip_entry``), never silently
dropped; ``.mid``/``.midi`` files, ``metadata.csv`` and hidden files are ignored.

``excerpt`` (optional: true/false, yes/no, 1/0, empty = false) says a recording is a cut of a longer piece
(a preview, the middle of a track): its end is not the piece's end, so the score tier learns no END there.
A WAV has no marker for it (a MIDI file has ``strata: excerpt``, ``pipeline.corpus.midi``).

``metadata.csv`` rows may only name files inside the raw folder (after resolving ``..`` and links):
a row pointing outside is skipped and reported, never silently followed, unless the environment
sets ``STRATA_ALLOW_OUTSIDE_RAW=1``.  A row repeating an earlier (path, genre) is reported once.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline.corpus.audio import AUDIO_EXTENSIONS
from pipeline.errors import PreprocessError

MIDI_EXTENSIONS = (".mid", ".midi")
EXCERPT_VALUES = {"": False, "0": False, "false": False, "no": False, "n": False,
                  "1": True, "true": True, "yes": True, "y": True}  # metadata.csv's excerpt column, lower-cased


def discover_inputs(raw_dir: str | Path, skipped: list[dict] | None = None,
                    excerpts: set[Path] | None = None) -> list[tuple[Path, str, Path | None]]:
    """Find ``(audio_path, genre, midi_path | None)`` under ``raw_dir``, sorted by path.

    Layout ``RAW/<genre>/<name>.<ext>`` (+ ``<name>.mid``), or ``RAW/metadata.csv`` with columns
    ``path,genre[,midi][,excerpt]``.  Entries that cannot be inputs are appended to ``skipped`` as
    ``{"path", "genre", "reason"}`` when a list is given; audio paths that metadata.csv marks as excerpts
    are added to ``excerpts`` when a set is given.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise PreprocessError(raw, "raw folder not found")
    skipped = [] if skipped is None else skipped
    excerpts = set() if excerpts is None else excerpts
    if (raw / "metadata.csv").is_file():
        return _discover_csv(raw, skipped, excerpts)
    return _discover_folders(raw, skipped)


def discover(raw_dir: str | Path) -> tuple[list[tuple[Path, str, Path | None]], list[dict]]:
    """``discover_inputs`` that also returns the skipped entries."""
    skipped: list[dict] = []
    return discover_inputs(raw_dir, skipped), skipped


def skip_entry(path: Path | str, genre: str | None, reason: str) -> dict:
    """A report entry for an input that is not used: ``{"path", "genre", "reason"}``."""
    return {"path": str(path), "genre": genre, "reason": reason}


def _is_audio_name(p: Path) -> bool:
    return p.suffix.lower() in AUDIO_EXTENSIONS


def _discover_folders(raw: Path, skipped: list[dict]) -> list[tuple[Path, str, Path | None]]:
    found = []
    for entry in sorted(raw.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if entry.suffix.lower() not in MIDI_EXTENSIONS:
                skipped.append(skip_entry(entry, None, "not inside a genre folder (layout RAW/<genre>/<file>)"))
            continue
        genre = entry.name
        for p in sorted(entry.iterdir()):
            item = _classify(p, genre, skipped)
            if item is not None:
                found.append(item)
    return found


def _classify(p: Path, genre: str, skipped: list[dict]) -> tuple[Path, str, Path | None] | None:
    """One entry of a genre folder -> input tuple, or None (ignored or reported)."""
    suffix = p.suffix.lower()
    if p.name.startswith(".") or suffix in MIDI_EXTENSIONS:
        return None
    if _is_audio_name(p):  # also dangling links and folders named x.wav: preprocess_file reports them
        return (p, genre, _midi_beside(p))
    if p.is_dir():
        skipped.append(skip_entry(p, genre, "is a folder (nested folders are not read)"))
    else:
        skipped.append(skip_entry(p, genre, f"unknown extension {suffix or '(none)'}"))
    return None


def _midi_beside(audio: Path) -> Path | None:
    for ext in MIDI_EXTENSIONS + tuple(e.upper() for e in MIDI_EXTENSIONS):
        m = audio.with_suffix(ext)
        if m.is_file():
            return m
    return None


def _discover_csv(raw: Path, skipped: list[dict], excerpts: set[Path]) -> list[tuple[Path, str, Path | None]]:
    meta = raw / "metadata.csv"
    try:
        with open(meta, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PreprocessError(meta, f"cannot read metadata.csv ({e})") from None
    if rows and not {"path", "genre"} <= set(rows[0]):
        missing = sorted({"path", "genre"} - set(rows[0]))
        raise PreprocessError(meta, f"metadata.csv has no column {', '.join(missing)} "
                              f"(needs the columns path,genre[,midi][,excerpt])")
    found, seen = [], {}
    allow_outside = os.environ.get("STRATA_ALLOW_OUTSIDE_RAW", "") == "1"
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        path = (row.get("path") or "").strip() if isinstance(row.get("path"), str) else ""
        genre = (row.get("genre") or "").strip() if isinstance(row.get("genre"), str) else ""
        if not path or not genre:
            skipped.append(skip_entry(f"{meta}:{i}", genre or None, "row without path or genre"))
            continue
        audio = raw / path
        if not _is_audio_name(audio):
            skipped.append(skip_entry(audio, genre, f"unknown extension {audio.suffix.lower() or '(none)'}"))
            continue
        flag = (row.get("excerpt") or "").strip().lower() if isinstance(row.get("excerpt"), str) else ""
        if flag not in EXCERPT_VALUES:
            skipped.append(skip_entry(audio, genre, f"line {i}: excerpt must be true or false, not {flag!r}"))
            continue
        midi_name = row.get("midi") if isinstance(row.get("midi"), str) else ""
        midi = raw / midi_name.strip() if midi_name.strip() else None
        outside = [p for p in (audio, midi) if p is not None and not allow_outside and not _inside(p, raw)]
        if outside:
            skipped.append(skip_entry(audio, genre, f"line {i}: {outside[0]} is outside the raw folder "
                                      f"(set STRATA_ALLOW_OUTSIDE_RAW=1 to allow it)"))
            continue
        key = (str(audio.resolve()), genre)
        if key in seen:
            skipped.append(skip_entry(audio, genre, f"line {i}: duplicate of line {seen[key]} (same path and genre)"))
            continue
        seen[key] = i
        found.append((audio, genre, midi))
        if EXCERPT_VALUES[flag]:
            excerpts.add(audio)
    return sorted(found, key=lambda t: (str(t[0]), t[1]))


def _inside(path: Path, raw: Path) -> bool:
    """``path`` (``..`` and links resolved) lies inside ``raw``."""
    try:
        return path.resolve().is_relative_to(raw.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False
