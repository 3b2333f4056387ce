"""The dataset folder's index (DESIGN 7): deterministic splits, ``manifest.json`` and ``report.json``.

``write_dataset`` writes both atomically from the track records of ``pipeline.corpus.preprocess``; the
manifest's layout is in docs/ARCHITECTURE.md, ``pipeline.corpus.dataset.load_manifest`` reads it back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

from pipeline.config import DataConfig, config_to_dict
from pipeline.errors import PreprocessError
from pipeline.io import atomic_write_json

SPLITS = ("train", "valid", "test")
MANIFEST_VERSION = 1
MANIFEST_TRACK_KEYS = ("id", "genre", "genre_id", "split", "seconds", "source", "hash", "midi",
                       "tiers", "samples", "roll", "roll_source", "excerpt")
POLICIES = {
    "short_files": "skipped when shorter than data.min_seconds after trimming",
    "midi": "unreadable MIDI, MIDI without (pitched) notes: the track is skipped (a wrong score is worse than none)",
    "midi_alignment": "tracks with MIDI are not trimmed at the start, so the roll stays aligned",
    "estimated_scores": "a track without MIDI gets a roll estimated from its audio (preprocess.estimate_scores); "
                        "when the estimate fails or finds no note, it keeps its tiers without a roll (no_roll)",
    "excerpts": "a track whose MIDI is marked as an excerpt (strata: excerpt), whose audio was cropped at "
                "data.max_seconds, or that metadata.csv's excerpt column marks, is a cut of a longer piece "
                "(excerpt: true): the score tier learns no end of piece and no piece length from it",
    "unknown_extensions": "reported as skipped; .mid/.midi, metadata.csv and hidden files are ignored",
}


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
        full.setdefault("roll_source", "midi" if t.get("roll") else None)  # records made before roll_source
        full.setdefault("excerpt", False)  # records made before excerpts were marked: whole pieces
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
    sources = roll_counts(manifest)
    return {
        "version": MANIFEST_VERSION,
        "counts": {"inputs": len(manifest["tracks"]) + len(skipped), "tracks": len(manifest["tracks"]),
                   "skipped": len(skipped), "with_midi": sources["midi"], "estimated_rolls": sources["estimated"],
                   "without_roll": sources["none"], "excerpts": sum(bool(t.get("excerpt")) for t in manifest["tracks"]),
                   **{f"{s}_tracks": c for s, c in counts.items()}},
        "hours": {"total": sum(per_genre.values()), "per_genre": per_genre, "per_split": per_split,
                  "per_genre_split": per_both},
        "skipped": sorted(skipped, key=lambda s: s["path"]),
        "cropped": sorted(i for i, v in info.items() if v.get("cropped")),
        "no_roll": sorted(({"path": t["source"], "genre": t["genre"], "reason": t["no_roll"]}
                           for t in tracks if t.get("no_roll")), key=lambda x: x["path"]),
        "policies": POLICIES,
    }


def roll_counts(manifest: dict) -> dict[str, int]:
    """Tracks by where their roll comes from: {"midi", "estimated", "none"}."""
    out = {"midi": 0, "estimated": 0, "none": 0}
    for t in manifest["tracks"]:
        out[t.get("roll_source") or ("midi" if t.get("roll") else "none")] += 1
    return out


def genres_without_score(manifest: dict, split: str = "train") -> list[str]:
    """Genres none of whose ``split`` tracks has a roll (from MIDI or estimated)."""
    have = {t["genre"] for t in manifest["tracks"] if t["split"] == split and t.get("roll")}
    return sorted(set(manifest["genres"]) - have)


def unscored_genre_lines(manifest: dict) -> list[str]:
    """One line per genre without any score in the train split: what a user gets instead."""
    return [f"genre '{g}': no training track has a score (no MIDI, no roll estimated from its audio: "
            f"see report.json's no_roll, or preprocess without --no-estimate); its tracks are learned "
            f"without a roll, the score model has no chords for it, and a piece asked for by this genre "
            f"is rendered from the genre label alone, with no notes to follow"
            for g in genres_without_score(manifest)]


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
