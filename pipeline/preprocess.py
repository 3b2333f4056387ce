"""Raw audio (+ optional MIDI, genre) -> dataset folder (DESIGN 1, 7).  No Prefect here.

Steps per file (``preprocess_file``): hash -> decode, mono, resample to the finest rate, trim,
crop, normalise (``pipeline.audio.prepare_audio``) -> aligned mu-law tiers -> piano roll.
Then ``assign_splits`` and ``write_dataset`` write ``manifest.json`` and ``report.json``.

Policies (also written into ``report.json`` under ``"policies"``):

- Short files: a track shorter than ``data.min_seconds`` after trimming is skipped.  The rule
  uses the data settings only, so a dataset does not depend on the stages' crop sizes; the
  ``tiny`` preset's ``min_seconds`` (2 s) equals its training crop (4000 samples at 2 kHz), and
  the dataset loader skips tracks shorter than a stage's context + crop, with a clear error
  when every track is.
- MIDI: a MIDI file that cannot be read, or has no notes, skips the whole track with the
  reason (a wrong or empty score is worse for training than no track).  A track without a
  MIDI file is kept with ``"roll": null``.
- Tracks with a MIDI score keep their timeline: the leading silence is not trimmed, so roll
  frame f stays aligned with audio time ``f / roll_fps`` (the trim would shift the audio
  against the score).  Tracks without MIDI are trimmed at both ends.
- Track ids are made here: ``<genre slug>-<name slug>-<8 hex>``; the hash covers the genre,
  the source path and the content, so two copies of one file in two genres get two ids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline.audio import AUDIO_EXTENSIONS, AudioError, make_tiers, prepare_audio
from pipeline.config import DataConfig, config_to_dict
from pipeline.errors import InputError, StrataError
from pipeline.io import atomic_save_npy, atomic_write_json

MIDI_EXTENSIONS = (".mid", ".midi")
SPLITS = ("train", "valid", "test")
MANIFEST_VERSION = 1
MANIFEST_TRACK_KEYS = ("id", "genre", "genre_id", "split", "seconds", "source", "hash", "midi",
                       "tiers", "samples", "roll")
POLICIES = {
    "short_files": "skipped when shorter than data.min_seconds after trimming",
    "midi": "unreadable MIDI, MIDI without (pitched) notes: the track is skipped (a wrong score is worse than none)",
    "midi_alignment": "tracks with MIDI are not trimmed at the start, so the roll stays aligned",
    "unknown_extensions": "reported as skipped; .mid/.midi, metadata.csv and hidden files are ignored",
}


class PreprocessError(InputError):
    """A raw input that cannot become a track; the message is ``"<path>: <reason>"``."""


# ----------------------------------------------------------------------------- discovery


def discover_inputs(raw_dir: str | Path, skipped: list[dict] | None = None) -> list[tuple[Path, str, Path | None]]:
    """Find ``(audio_path, genre, midi_path | None)`` under ``raw_dir``, sorted by path.

    Layout ``RAW/<genre>/<name>.<ext>`` (+ ``<name>.mid``), or ``RAW/metadata.csv`` with columns
    ``path,genre[,midi]``.  Entries that cannot be inputs are appended to ``skipped`` as
    ``{"path", "genre", "reason"}`` when a list is given.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise PreprocessError(raw, "raw folder not found")
    skipped = [] if skipped is None else skipped
    if (raw / "metadata.csv").is_file():
        return _discover_csv(raw, skipped)
    return _discover_folders(raw, skipped)


def discover(raw_dir: str | Path) -> tuple[list[tuple[Path, str, Path | None]], list[dict]]:
    """``discover_inputs`` that also returns the skipped entries."""
    skipped: list[dict] = []
    return discover_inputs(raw_dir, skipped), skipped


def _skip(path: Path | str, genre: str | None, reason: str) -> dict:
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
                skipped.append(_skip(entry, None, "not inside a genre folder (layout RAW/<genre>/<file>)"))
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
        skipped.append(_skip(p, genre, "is a folder (nested folders are not read)"))
    else:
        skipped.append(_skip(p, genre, f"unknown extension {suffix or '(none)'}"))
    return None


def _midi_beside(audio: Path) -> Path | None:
    for ext in MIDI_EXTENSIONS + tuple(e.upper() for e in MIDI_EXTENSIONS):
        m = audio.with_suffix(ext)
        if m.is_file():
            return m
    return None


def _discover_csv(raw: Path, skipped: list[dict]) -> list[tuple[Path, str, Path | None]]:
    meta = raw / "metadata.csv"
    try:
        with open(meta, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PreprocessError(meta, f"cannot read metadata.csv ({e})") from None
    if rows and not {"path", "genre"} <= set(rows[0]):
        raise PreprocessError(meta, "metadata.csv needs the columns path,genre[,midi]")
    found = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        path, genre = (row.get("path") or "").strip(), (row.get("genre") or "").strip()
        if not path or not genre:
            skipped.append(_skip(f"{meta}:{i}", genre or None, "row without path or genre"))
            continue
        audio = raw / path
        if not _is_audio_name(audio):
            skipped.append(_skip(audio, genre, f"unknown extension {audio.suffix.lower() or '(none)'}"))
            continue
        midi = (row.get("midi") or "").strip()
        found.append((audio, genre, raw / midi if midi else None))
    return sorted(found, key=lambda t: (str(t[0]), t[1]))


# ----------------------------------------------------------------------------- hashing and ids


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def settings_hash(data_cfg: DataConfig) -> str:
    """sha256 of the preprocessing settings (the data config) plus the manifest version."""
    text = json.dumps({"data": config_to_dict(data_cfg), "version": MANIFEST_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def slug(text: str, max_len: int = 40) -> str:
    """A safe file-name piece: ASCII letters, digits, '.', '_' and '-' only (never empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip("-._").lower()
    return s[:max_len].strip("-._") or "x"


def track_id(audio_path: str | Path, genre: str, content_hash: str) -> str:
    """Program-made id ``<genre>-<name>-<8 hex>``, safe as a file name.

    It depends on the genre, the file's name and its content, never on where the corpus lies,
    so the same corpus in another folder gets the same ids (and so the same split).
    """
    p = Path(audio_path)
    key = f"{genre}\0{p.name}\0{content_hash}"
    return f"{slug(genre, 24)}-{slug(p.stem)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def track_files(track: str, data_cfg: DataConfig, has_roll: bool) -> dict[str, Any]:
    """Relative output paths of a track: {"tiers": {rate: path}, "roll": path | None}."""
    tiers = {str(r): f"tiers/{r}/{track}.npy" for r in data_cfg.rates}
    return {"tiers": tiers, "roll": f"rolls/{track}.npy" if has_roll else None}


def outputs_exist(out_dir: str | Path, record: dict) -> bool:
    """True when every file a track record names exists under ``out_dir``."""
    out = Path(out_dir)
    paths = list(record.get("tiers", {}).values()) + ([record["roll"]] if record.get("roll") else [])
    return bool(paths) and all((out / p).is_file() for p in paths)


# ----------------------------------------------------------------------------- one file


def preprocess_file(
    audio_path: str | Path, genre: str, midi_path: str | Path | None, out_dir: str | Path, data_cfg: DataConfig
) -> dict[str, Any]:
    """Turn one raw file into tier files (+ roll); return its track record.

    The record has the manifest keys except ``split`` and ``genre_id``, plus ``"info"``
    (source rate, channels, cropping) for the report.  Bad input raises ``AudioError`` or
    ``PreprocessError`` (both ``StrataError``); transient I/O failures raise ``OSError``.
    """
    audio_path, out = Path(audio_path), Path(out_dir)
    rates = sorted(data_cfg.rates)
    content = _hash_input(audio_path)
    notes = _read_notes(Path(midi_path)) if midi_path is not None else None
    audio, info = _prepare(audio_path, data_cfg, keep_start=notes is not None)  # (n_K,) at r_K
    tiers = make_tiers(_crop_for_roll(audio, rates[-1], data_cfg.roll_fps), rates, data_cfg.mu_bits)
    n0 = len(tiers[rates[0]])
    _check_alignment(audio_path, tiers, rates, data_cfg.min_seconds)
    track = track_id(audio_path, genre, content)
    files = track_files(track, data_cfg, has_roll=notes is not None)
    roll = None if notes is None else _roll(notes, data_cfg.roll_fps, n0 * data_cfg.roll_fps // rates[0])
    _write_outputs(out, files, tiers, roll)
    return {
        "id": track,
        "genre": genre,
        "seconds": n0 / rates[0],
        "source": str(audio_path.absolute()),
        "hash": content,
        "midi": None if midi_path is None else str(Path(midi_path).absolute()),
        "tiers": files["tiers"],
        "samples": {str(r): int(len(tiers[r])) for r in rates},
        "roll": files["roll"],
        "info": info,
    }


def _hash_input(path: Path) -> str:
    """Content hash; missing, non-file and unreadable inputs become ``AudioError``."""
    if not path.exists():
        raise AudioError(path, "file not found" + (" (dangling link)" if path.is_symlink() else ""))
    if not path.is_file():
        raise AudioError(path, "not a file")
    try:
        return file_hash(path)
    except PermissionError:
        raise AudioError(path, "permission denied") from None


def _prepare(path: Path, d: DataConfig, keep_start: bool) -> tuple[np.ndarray, dict]:
    """Decoded mono float32 at the finest rate; ``keep_start`` disables the trim (MIDI timeline)."""
    top_db = math.inf if keep_start else d.trim_db  # threshold 0: every frame counts as sound
    audio, info = prepare_audio(path, max(d.rates), d.peak, top_db, d.min_seconds, d.max_seconds)
    return audio, dict(info, trimmed=not keep_start)


def _crop_for_roll(audio: np.ndarray, rate_fine: int, roll_fps: int) -> np.ndarray:
    """Crop the tail to whole roll frames, so n_0 * roll_fps / r_0 is an integer."""
    step = rate_fine // roll_fps  # a multiple of r_K / r_0 too (every rate is a multiple of roll_fps)
    return audio[: len(audio) - len(audio) % step]


def _check_alignment(path: Path, tiers: dict[int, np.ndarray], rates: Sequence[int], min_seconds: float) -> None:
    n0 = len(tiers[rates[0]])
    if n0 / rates[0] < min_seconds:
        raise PreprocessError(path, f"too short: {n0 / rates[0]:.2f} s < {min_seconds:.1f} s")
    for r in rates:
        if len(tiers[r]) * rates[0] != n0 * r:
            raise AssertionError(f"tier {r} has {len(tiers[r])} samples, expected {n0 * r // rates[0]}")


def _read_notes(midi_path: Path) -> list:
    """Notes of a MIDI file; unreadable or note-less files raise ``PreprocessError``."""
    from pipeline.midi import MidiError, read_midi

    if not midi_path.is_file():
        raise PreprocessError(midi_path, "MIDI file not found")
    try:
        notes = read_midi(midi_path)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        if reason == "no notes":
            raise PreprocessError(midi_path, "MIDI has no notes, track skipped") from None
        raise PreprocessError(midi_path, f"bad MIDI, track skipped ({reason})") from None
    except PermissionError:
        raise PreprocessError(midi_path, "MIDI permission denied, track skipped") from None
    if not any(not n.is_drum for n in notes):
        raise PreprocessError(midi_path, "MIDI has no pitched notes (drums only), track skipped")
    return notes


def _roll(notes: list, fps: int, n_frames: int) -> np.ndarray:
    from pipeline.midi import piano_roll

    roll = piano_roll(notes, fps=fps, n_frames=n_frames)  # (2, 128, F) uint8
    assert roll.shape == (2, 128, n_frames), roll.shape
    return roll


def _write_outputs(out: Path, files: dict, tiers: dict[int, np.ndarray], roll: np.ndarray | None) -> None:
    """Write every file atomically; on failure remove this track's files written so far."""
    written: list[Path] = []
    try:
        for r, rel in files["tiers"].items():
            atomic_save_npy(out / rel, tiers[int(r)])  # (n_k,) uint8
            written.append(out / rel)
        if roll is not None:
            atomic_save_npy(out / files["roll"], roll)  # (2, 128, F) uint8
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- splits


def assign_splits(tracks: Sequence[dict], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> dict[str, str]:
    """Track id -> "train" | "valid" | "test", deterministic from content hashes and ``seed``.

    Per genre, tracks are ordered by ``sha256(seed, hash, id)`` and cut by ``fractions``; a genre
    with >= 3 tracks gets at least one track in every split with a positive fraction.  Tracks
    of smaller genres are pooled and cut the same way; the pool also gets every split when no
    genre is large enough, so any dataset of >= 3 tracks has every split non-empty.
    """
    by_genre: dict[str, list[dict]] = {}
    for t in tracks:
        by_genre.setdefault(t["genre"], []).append(t)
    out: dict[str, str] = {}
    pool: list[dict] = []
    for genre in sorted(by_genre):
        group = by_genre[genre]
        if len(group) >= 3:
            out.update(_cut(_ordered(group, seed), fractions, ensure=True))
        else:
            pool.extend(group)
    out.update(_cut(_ordered(pool, seed), fractions, ensure=not out))
    return out


def _ordered(group: Iterable[dict], seed: int) -> list[dict]:
    key = lambda t: hashlib.sha256(f"{seed}\0{t['hash']}\0{t['id']}".encode()).hexdigest()  # noqa: E731
    return sorted(group, key=key)


def _cut(group: list[dict], fractions: Sequence[float], ensure: bool) -> dict[str, str]:
    """Counts per split by rounding; with ``ensure`` and >= 3 tracks none of them is 0."""
    n = len(group)
    counts = [int(round(n * f)) for f in fractions[1:]]  # valid, test
    if ensure and n >= 3:
        counts = [max(1, c) if f > 0 else c for c, f in zip(counts, fractions[1:])]
    while sum(counts) > n - (1 if fractions[0] > 0 and n >= 1 else 0):
        counts[counts.index(max(counts))] -= 1
    n_train = n - sum(counts)
    names = ["train"] * n_train + ["valid"] * counts[0] + ["test"] * counts[1]
    return {t["id"]: s for t, s in zip(group, names)}


# ----------------------------------------------------------------------------- dataset folder


def build_manifest(tracks: Sequence[dict], data_cfg: DataConfig, seed: int = 0) -> dict[str, Any]:
    """The manifest (ARCHITECTURE.md): genres sorted, genre_id = index, split per track."""
    splits = assign_splits(tracks, data_cfg.split, seed)
    genres = sorted({t["genre"] for t in tracks})
    entries = []
    for t in sorted(tracks, key=lambda t: t["id"]):
        full = dict(t, genre_id=genres.index(t["genre"]), split=t.get("split") or splits[t["id"]])
        entries.append({k: full[k] for k in MANIFEST_TRACK_KEYS})
    return {
        "version": MANIFEST_VERSION,
        "config": config_to_dict(data_cfg),
        "rates": sorted(data_cfg.rates),
        "classes": data_cfg.classes,
        "roll_fps": data_cfg.roll_fps,
        "genres": genres,
        "tracks": entries,
    }


def build_report(manifest: dict, tracks: Sequence[dict], skipped: Sequence[dict]) -> dict[str, Any]:
    """Skipped files with reasons, counts, and hours per genre, per split and per both."""
    per_genre: dict[str, float] = {g: 0.0 for g in manifest["genres"]}
    per_split: dict[str, float] = {s: 0.0 for s in SPLITS}
    per_both: dict[str, dict[str, float]] = {g: {s: 0.0 for s in SPLITS} for g in manifest["genres"]}
    counts = {s: 0 for s in SPLITS}
    for t in manifest["tracks"]:
        h = t["seconds"] / 3600
        per_genre[t["genre"]] += h
        per_split[t["split"]] += h
        per_both[t["genre"]][t["split"]] += h
        counts[t["split"]] += 1
    info = {t["id"]: t.get("info", {}) for t in tracks}
    return {
        "version": MANIFEST_VERSION,
        "counts": {"inputs": len(manifest["tracks"]) + len(skipped), "tracks": len(manifest["tracks"]),
                   "skipped": len(skipped), "with_midi": sum(t["roll"] is not None for t in manifest["tracks"]),
                   **{f"{s}_tracks": c for s, c in counts.items()}},
        "hours": {"total": sum(per_genre.values()), "per_genre": per_genre, "per_split": per_split,
                  "per_genre_split": per_both},
        "skipped": sorted(skipped, key=lambda s: s["path"]),
        "cropped": sorted(i for i, v in info.items() if v.get("cropped")),
        "policies": POLICIES,
    }


def write_dataset(
    out_dir: str | Path, tracks: Sequence[dict], skipped: Sequence[dict], data_cfg: DataConfig, seed: int = 0
) -> dict[str, Any]:
    """Write ``manifest.json`` and ``report.json`` atomically; return ``{"manifest", "report"}``.

    Tier and roll files are never removed here (nothing written for good tracks is lost).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [t["id"] for t in tracks]
    if len(ids) != len(set(ids)):
        raise PreprocessError(out, "two inputs map to the same track id")
    manifest = build_manifest(tracks, data_cfg, seed)
    report = build_report(manifest, tracks, skipped)
    atomic_write_json(out / "report.json", report)
    atomic_write_json(out / "manifest.json", manifest)
    return {"manifest": manifest, "report": report}


def skip_record(audio_path: str | Path, genre: str | None, error: BaseException) -> dict:
    """A report entry for a file that failed with ``error``."""
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, StrataError):
        reason = f"I/O error: {error.strerror or error}"
    elif getattr(error, "path", None) not in (None, str(audio_path)):  # e.g. the MIDI file
        reason = f"{Path(error.path).name}: {reason}"
    return _skip(audio_path, genre, reason)


def process_all(
    inputs: Sequence[tuple[Path, str, Path | None]], out_dir: str | Path, data_cfg: DataConfig
) -> tuple[list[dict], list[dict]]:
    """Sequential, Prefect-free loop over ``inputs``: (track records, skip records)."""
    tracks, skipped = [], []
    for audio, genre, midi in inputs:
        try:
            tracks.append(preprocess_file(audio, genre, midi, out_dir, data_cfg))
        except (StrataError, OSError) as e:
            skipped.append(skip_record(audio, genre, e))
    return tracks, skipped
