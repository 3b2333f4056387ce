"""The score tier at the top of the cascade: its data, its training, its export and its sampling.

The model (``models/score_tier.py``) is a decoder-only Transformer over note events
(``pipeline/corpus/score_events.py``: time shifts, note on/off, velocity, end of piece), conditioned on
the genre ("no genre" for unconditional pieces, by dropout).  Stage 0 renders the roll of the
events it writes, as it renders a MIDI file.

- Data: the rolls of the dataset's training split (from MIDI, or estimated from recordings), plus
  MIDI files in genre folders (``--extra-scores DIR``: ``DIR/<genre>/*.mid``).  Validation: the
  valid split's rolls.  ``stages/score/data.json`` lists what the tier saw.
- Training: ``ScoreTierTrainer`` is the stage trainer (Accelerate, exact resume, EMA, validation
  from step 0, best export, curves) with its own batches and loss: windows of ``context + 1``
  events, each item a pure function of (seed, index), augmented by transposition and tempo.
- Export: ``stages/score/model.safetensors`` + ``model.json`` (the model's description; never
  unpickled).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_model, save_model

from models.checkpoint import package_version
from models.score_tier import NO_LENGTH, ScoreTierConfig, ScoreTransformer
from pipeline.corpus.dataset import load_manifest
from pipeline.corpus.midi import piano_roll, read_score
from pipeline.corpus.score_events import (
    END,
    MAX_SHIFT,
    N_PITCHES,
    NOTE_OFF_BASE,
    NOTE_ON_BASE,
    PAD,
    SHIFT_BASE,
    STEPS_PER_SECOND,
    VOCAB_SIZE,
    event_clock,
    events_seconds,
    held_before,
    roll_to_events,
    stretch_window,
    token_seconds,
    transpose,
)
from pipeline.errors import DatasetError, RunError
from pipeline.io import atomic_path, atomic_write_json, swap_dirs
from pipeline.lock import folder_lock
from pipeline.run import SCORE_KEY, check_checkpoints, check_run_config, is_exported, logs_dir, metrics_path, stage_dir
from pipeline.training.ema import EMA
from pipeline.training.train_parts import WarmupCosine, recover_run_folder, seed_of
from pipeline.training.trainer import StageTrainer

logger = logging.getLogger("strata.score_tier")

SEED_KEY = 97  # the score tier's place in every seed (stages use their index)
VALID_SEED = 977
META = "model.json"
WEIGHTS = "model.safetensors"
DATA_FILE = "data.json"
TRAIN_EVENTS = "train_events.npz"  # the events it learned from (the n-gram baselines are fitted on the same)
FORMAT = "strata-score-tier"
WINDOW_MARGIN = 32  # events cut past a window before stretching (a stretched 1 s shift can split in two)
MIDI_SUFFIXES = (".mid", ".midi")


@dataclass(frozen=True)
class ScorePiece:
    """One score as events, with where it came from."""
    genre: str
    events: tuple[int, ...]
    source: str  # a track id of the dataset, or a path relative to the extra-scores folder
    kind: str  # "midi" | "estimated" (dataset rolls) | "extra" (--extra-scores)

    @property
    def seconds(self) -> float:
        return events_seconds(self.events)

    @property
    def ended(self) -> bool:
        """A whole piece (its events close with END), not an excerpt (``piece_events``)."""
        return is_whole(self.events)


def is_whole(events) -> bool:
    """Whether a piece's events close with END: a whole piece, whose length is a piece length."""
    return len(events) > 0 and events[-1] == END


def piece_events(roll: np.ndarray, fps: int, excerpt: bool) -> tuple[int, ...]:
    """A roll (2, 128, F) as the score tier's events: closed by END at the roll's end for a whole piece; for an
    excerpt (the start of a longer piece) without END and without the silence after its last note, so the
    tier learns neither an end of piece nor a piece length where the piece was only cut."""
    events = roll_to_events(roll, fps)
    if excerpt:
        events = events[:-1]  # the END
        while events and SHIFT_BASE <= events[-1] < SHIFT_BASE + MAX_SHIFT:
            events.pop()  # the tail after the cut (a rendering's release)
    return tuple(events)


def lengths_of(pieces, genre_id: int | None) -> list[float]:
    """Seconds of the whole pieces (not excerpts) among ``(genre id, events)`` of ``genre_id`` (None: all):
    the piece lengths a tier is asked to write and measured against."""
    return [events_seconds(ev) for g, ev in pieces if (genre_id is None or g == genre_id) and is_whole(ev)]


# ----------------------------------------------------------------------------- data


def split_pieces(data_dir, manifest: dict, split: str, fps: int, excerpts: bool = True) -> list[ScorePiece]:
    """The rolls of ``split``'s tracks as event sequences (tracks without a roll are left out); ``excerpts``
    False reads a track marked as an excerpt as a whole piece (``score_tier.excerpts``: the ablation)."""
    out = []
    for t in manifest["tracks"]:
        if t["split"] != split or not t.get("roll"):
            continue
        roll = np.load(Path(data_dir) / t["roll"], allow_pickle=False)
        events = piece_events(roll, fps, excerpts and bool(t.get("excerpt")))
        if any(tok != END for tok in events):  # END alone: a roll without notes
            out.append(ScorePiece(t["genre"], events, t["id"], t.get("roll_source") or "midi"))
    return out


def extra_pieces(extra_dir, genres: list[str], fps: int,
                 excerpts: bool = True) -> tuple[list[ScorePiece], list[dict]]:
    """``extra_dir/<genre>/*.mid`` as event sequences; (pieces, skipped with reasons); ``excerpts`` as in
    ``split_pieces``.

    A folder whose name is not one of the dataset's ``genres``, and a file that cannot be read or has
    no notes, is skipped and listed; it never stops training."""
    root = Path(extra_dir)
    if not root.is_dir():
        raise DatasetError(f"{extra_dir}: --extra-scores is not a folder")
    pieces, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
        if folder.name not in genres:
            if files:
                skipped.append({"path": folder.name, "reason": f"genre {folder.name!r} is not in the dataset "
                                f"(known: {', '.join(genres)})"})
            continue
        for f in files:
            rel = f.relative_to(root).as_posix()
            try:
                notes, excerpt = read_score(f)
            except Exception as e:  # noqa: BLE001 - mido raises many kinds on corrupt files; skip and report
                skipped.append({"path": rel, "reason": f"unreadable MIDI ({type(e).__name__}: {e})"[:200]})
                continue
            if not notes:
                skipped.append({"path": rel, "reason": "no notes"})
                continue
            events = piece_events(piano_roll(notes, fps=fps), fps, excerpts and excerpt)
            pieces.append(ScorePiece(folder.name, events, rel, "extra"))
    return pieces, skipped


def data_summary(train: list[ScorePiece], valid: list[ScorePiece], skipped: list[dict],
                 extra_dir: str | None) -> dict:
    """What the score tier saw, for ``stages/score/data.json``: per split and kind, pieces, events, minutes."""
    def count(pieces):
        out: dict[str, dict] = {}
        for p in pieces:
            row = out.setdefault(f"{p.genre}/{p.kind}", {"pieces": 0, "excerpts": 0, "events": 0, "minutes": 0.0})
            row["pieces"] += 1
            row["excerpts"] += not p.ended
            row["events"] += len(p.events)
            row["minutes"] = round(row["minutes"] + p.seconds / 60.0, 2)
        return dict(sorted(out.items()))

    return {"train": count(train), "valid": count(valid),
            "extra_scores": None if extra_dir is None else os.path.basename(os.path.normpath(str(extra_dir))),
            "extra_skipped": skipped,
            "train_sources": sorted(p.source for p in train), "valid_sources": sorted(p.source for p in valid)}


class EventWindows(torch.utils.data.Dataset):
    """Item i: a window of ``context + 1`` events of one piece (``[END, *events]``), a pure function of (seed, i).

    Pieces are drawn in proportion to their length; a window is transposed by a random number of
    semitones in [-transpose, transpose] (0 where a note would leave the keyboard) and its time shifts
    stretched by a factor in [1 - stretch, 1 + stretch] (``stretch_window``: on the piece's time line).
    The work per item is linear in ``context``, not in the piece's length (whole works run to 20,000 events).  Returns
    ``{"tokens": (context + 1,) long (PAD past the piece's end), "genre": () long, "offset": () long,
    "total": () long, "length": () long, "held": (128,) bool, "semitones": () long}`` (``semitones``: the
    transposition applied, 0 where it was not, the key input of a tier with ``transpositions``; ``offset``: the
    piece's time steps before the window, for the model's clock; ``total``: the piece's length in steps told to the
    model, ``NO_LENGTH`` in a ``length_dropout`` share of windows and always for an excerpt; ``length``: the piece's
    length whether told or not, the length head's answer, ``NO_LENGTH`` for an excerpt; ``held``: the pitches
    sounding before the window).  An excerpt's ending windows (``edge_share``) are drawn uniformly instead: it has
    no END.

    ``edge_share`` of the windows sit at a piece's edges, half starting it and half ending with its END:
    drawn uniformly, a piece's first events and its END are each a target in ~1 window per thousand, and a
    tier trained so wrote pieces that opened on a time shift (P(END) 0.14-0.25 and the usual opening
    VELOCITY nowhere in its top three, after the opening END) and stayed silent."""
    def __init__(self, pieces: list[ScorePiece], genres: list[str], context: int, seed: int,
                 length: int, transpose: int = 0, stretch: float = 0.0, length_dropout: float = 0.0,
                 edge_share: float = 0.0):
        if not pieces:
            raise DatasetError("no score to train the score tier on")
        self.pieces, self.context, self.seed, self.length = pieces, int(context), int(seed), int(length)
        self.genre_ids = [genres.index(p.genre) for p in pieces]
        self.whole = [p.ended for p in pieces]  # excerpts: no END to end on, no length to tell
        sizes = np.array([len(p.events) for p in pieces], np.float64)
        self.cum = np.cumsum(sizes / sizes.sum())
        self.steps = [event_clock(p.events) for p in pieces]  # steps of events[:i]
        self.held = [np.packbits(held_before(p.events), axis=1) for p in pieces]  # (N + 1, 16) uint8 per piece
        self.transpose, self.stretch = int(transpose), float(stretch)
        self.length_dropout = float(length_dropout)
        self.edge_share = float(edge_share)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        j = min(int(np.searchsorted(self.cum, rng.random(), side="right")), len(self.pieces) - 1)
        events = self.pieces[j].events
        factor = float(rng.uniform(1 - self.stretch, 1 + self.stretch)) if self.stretch > 0 else 1.0
        semitones = int(rng.integers(-self.transpose, self.transpose + 1)) if self.transpose > 0 else 0
        told = rng.random() >= self.length_dropout
        # the piece is read as seq = [END] + events: the window is seq[start:start + context + 1] = events[a:] ...
        # any start but the last: every event is a target in the same share of windows, the END too (starts
        # only up to len - context would make the END a target of one start in ~len: never learned)
        start = int(rng.integers(0, max(1, len(events))))
        if self.edge_share > 0:  # drawn last: the other draws are those of a tier trained without it
            edge = rng.random()
            if edge < self.edge_share / 2:
                start = 0  # the piece's opening
            elif edge < self.edge_share and self.whole[j]:
                start = max(0, len(events) - self.context)  # the window's last target is the piece's END
        a = max(0, start - 1)
        part = list(events[a:a + self.context + 1 + WINDOW_MARGIN])  # only the window is augmented (time ~ context)
        offset = int(self.steps[j][a])  # the clock before the window's first event
        total = int(self.steps[j][-1])  # the piece's length
        held = np.unpackbits(self.held[j][a])[:N_PITCHES].astype(bool)  # (128,) sounding before events[a]
        if factor != 1.0:
            part = stretch_window(part, factor, offset)
            offset, total = int(round(offset * factor)), int(round(total * factor))
        if semitones:
            moved = transpose(part, semitones)  # None where a note would leave the keyboard: untransposed
            if moved is None:
                semitones = 0
            else:
                part = moved
                held = np.roll(held, semitones)
                if semitones > 0:
                    held[:semitones] = False
                else:
                    held[semitones:] = False
        window = ([END] if start == 0 else []) + part[:self.context + 1]
        tokens = torch.full((self.context + 1,), PAD, dtype=torch.long)  # PAD past the piece's end
        tokens[:len(window)] = torch.tensor(window[:self.context + 1], dtype=torch.long)
        return {"tokens": tokens, "genre": torch.tensor(self.genre_ids[j], dtype=torch.long),
                "offset": torch.tensor(offset, dtype=torch.long),
                "total": torch.tensor(total if told and self.whole[j] else NO_LENGTH, dtype=torch.long),
                "length": torch.tensor(total if self.whole[j] else NO_LENGTH, dtype=torch.long),
                "held": torch.from_numpy(held), "semitones": torch.tensor(semitones, dtype=torch.long)}


def window_bits(model, tokens: torch.Tensor, genre: torch.Tensor, offset: torch.Tensor | None = None,
                total: torch.Tensor | None = None, held: torch.Tensor | None = None,
                semitones: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, C + 1), genre (B,), offset (B,) steps before the window, total (B,) the piece's length
    (``NO_LENGTH``: not told), held (B, 128) pitches sounding before it, semitones (B,) its transposition (None:
    as written) -> (bits (B, C), scored (B, C) bool): each event from those before it."""
    x, y = tokens[:, :-1], tokens[:, 1:]  # (B, C)
    mask = y != PAD
    logits = model(x, genre, offset, total, held, semitones=semitones)  # (B, C, V)
    return model.nll_bits(logits, y, mask), mask


def save_pieces(path: Path, pieces: list[ScorePiece], genres: list[str]) -> None:
    """Event sequences as one int16 array with offsets and genre ids (``np.load`` without pickle)."""
    offsets = np.cumsum([0] + [len(p.events) for p in pieces]).astype(np.int64)
    flat = np.concatenate([np.asarray(p.events, np.int16) for p in pieces]) if pieces else np.zeros(0, np.int16)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, events=flat, offsets=offsets,
                                genre=np.array([genres.index(p.genre) for p in pieces], np.int16))


def load_pieces(path: Path) -> list[tuple[int, list[int]]]:
    """(genre id, events) of ``save_pieces``."""
    with np.load(path, allow_pickle=False) as z:
        flat, offsets, genre = z["events"], z["offsets"], z["genre"]
    return [(int(g), flat[a:b].astype(int).tolist()) for g, a, b in zip(genre, offsets[:-1], offsets[1:])]


# ----------------------------------------------------------------------------- model files


def model_config(cfg, n_genres: int):
    """The run config's ``score_tier`` section -> ``models.score_tier.ScoreTierConfig``."""
    s = cfg.score_tier
    return ScoreTierConfig(n_layers=s.n_layers, n_heads=s.n_heads, width=s.width, context=s.context,
                           dropout=s.dropout, vocab_size=VOCAB_SIZE, n_genres=n_genres, end_token=END,
                           pad_token=PAD, clock_buckets=0 if s.clock_anchors else s.clock_buckets,
                           clock_anchors=s.clock_anchors,
                           clock_steps=max(1, round(s.clock_seconds * STEPS_PER_SECOND)),
                           shift_first=SHIFT_BASE, n_shifts=MAX_SHIFT, length_buckets=s.length_buckets,
                           length_head=s.length_head > 0, held_input=s.held_input, note_on_first=NOTE_ON_BASE,
                           note_off_first=NOTE_OFF_BASE, n_pitches=N_PITCHES,
                           transpositions=2 * s.transpose + 1 if s.key_input and s.transpose > 0 else 0)


def save_score_tier(model, folder: Path, extra: dict) -> Path:
    """``folder/model.safetensors`` + ``folder/model.json`` (the model's description and ``extra``)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS), metadata={"format": FORMAT})  # tied embeddings stored once
    atomic_write_json(folder / META, {"format": FORMAT, "strata_version": package_version(),
                                      "config": model.describe(), "n_params": model.n_params, "extra": extra})
    return folder


def is_trained(run_dir) -> bool:
    """The run exported its score tier (``pipeline.run.is_exported``)."""
    return is_exported(run_dir, SCORE_KEY)


def load_score_tier(run_dir):
    """(model in eval mode, model.json) of the run's score tier, or None when the run has none.
    A broken export is one RunError naming the folder."""
    folder = stage_dir(run_dir, SCORE_KEY)
    if not is_trained(run_dir):
        return None
    try:
        desc = json.loads((folder / META).read_text())
        if desc.get("format") != FORMAT:
            raise ValueError(f"format {desc.get('format')!r}, expected {FORMAT!r}")
        model = ScoreTransformer.from_description(desc["config"])
        load_model(model, str(folder / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - a broken export is a user-facing error
        raise RunError(f"{folder}: cannot load the score tier ({type(e).__name__}: {e})") from None
    return model.eval(), desc


# ----------------------------------------------------------------------------- training


def train_score_tier(data_dir, run_dir, cfg, max_steps: int | None = None, max_minutes: float | None = None,
                     resume: bool = False, progress: bool = True, extra_scores: str | None = None) -> dict:
    """Train the score tier of ``run_dir`` on ``data_dir`` (+ ``extra_scores``); the trainer's summary."""
    with folder_lock(run_dir, "strata train"):
        recover_run_folder(run_dir, SCORE_KEY)
        return ScoreTierTrainer(data_dir, run_dir, cfg, extra_scores, max_steps, max_minutes, resume,
                                progress).setup().run()


class ScoreTierTrainer(StageTrainer):
    """``StageTrainer`` with the score tier's model, batches, loss, validation and export."""
    def __init__(self, data_dir, run_dir, cfg, extra_scores: str | None = None, max_steps: int | None = None,
                 max_minutes: float | None = None, resume: bool = False, progress: bool = True):
        super().__init__(data_dir, run_dir, cfg, SCORE_KEY, max_steps, max_minutes, resume, progress)
        self.extra_scores = extra_scores
        self.seed_key = SEED_KEY
        self.title, self.unit = "score tier", "events"

    def _prepare_run_folder(self) -> None:
        run_dir, acc, cfg = self.run_dir, self.accelerator, self.cfg
        self.manifest = load_manifest(self.data_dir)
        self.genres = list(self.manifest["genres"])
        fps = cfg.data.roll_fps
        cut = cfg.score_tier.excerpts
        self.train_pieces = split_pieces(self.data_dir, self.manifest, "train", fps, cut)
        skipped: list[dict] = []
        if self.extra_scores:
            extra, skipped = extra_pieces(self.extra_scores, self.genres, fps, cut)
            self.train_pieces += extra
            for s in skipped:
                self.note(f"score tier: skipped {s['path']}: {s['reason']}")
        if not self.train_pieces:
            raise DatasetError(f"{self.data_dir}: no training track has a score (MIDI or estimated roll) and no "
                               f"--extra-scores: the score tier has nothing to learn from")
        self.valid_pieces = split_pieces(self.data_dir, self.manifest, "valid", fps, cut)
        if not self.valid_pieces:
            self.note("score tier: no valid-split track has a score: validating on training windows")
        self.data = data_summary(self.train_pieces, self.valid_pieces, skipped, self.extra_scores)
        without = sorted(set(self.genres) - {p.genre for p in self.train_pieces})
        if without:
            self.note(f"score tier: no score of genre(s) {', '.join(without)}: a piece of those genres gets an "
                      f"unconditional score")
        self.s = cfg.score_tier
        self.stop_at = int(self.max_steps if self.max_steps is not None else self.s.max_steps)
        check_checkpoints(run_dir, SCORE_KEY, self.resume)
        check_run_config(run_dir, cfg, self.resume, write=self.main)
        acc.wait_for_everyone()
        if self.main and not self.resume:
            shutil.rmtree(logs_dir(run_dir, SCORE_KEY), ignore_errors=True)
            metrics_path(run_dir, SCORE_KEY).unlink(missing_ok=True)
        acc.wait_for_everyone()

    def _build_model(self) -> None:
        t, s = self.t, self.s
        self.n_genres = len(self.genres)
        set_seed(seed_of(t.seed, SEED_KEY))
        model = ScoreTransformer(model_config(self.cfg, self.n_genres))
        self.end_code = None
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=tuple(t.betas), weight_decay=0.01)
        self.cosine = WarmupCosine(t.warmup_steps, s.max_steps, t.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.cosine)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.ema = EMA(self.unwrapped, t.ema_decay)
        for obj in (self.scheduler, self.ema, self.state):
            self.accelerator.register_for_checkpointing(obj)
        self.note(f"score tier: {self.unwrapped.n_params:,} parameters; {len(self.train_pieces)} training scores "
                  f"({sum(len(p.events) for p in self.train_pieces):,} events)")

    def _build_data(self) -> None:
        s, t, acc = self.s, self.t, self.accelerator
        per_step = s.batch_size * t.grad_accum
        train = EventWindows(self.train_pieces, self.genres, s.context, seed_of(t.seed, SEED_KEY, acc.process_index),
                             10**12, s.transpose, s.stretch, s.length_dropout, s.edge_share)
        start = self.state.step * per_step
        n_items = max(0, self.stop_at - self.state.step) * per_step
        self.loader = torch.utils.data.DataLoader(train, batch_size=s.batch_size,
                                                  sampler=range(start, start + n_items), drop_last=True,
                                                  num_workers=t.num_workers)
        valid = EventWindows(self.valid_pieces or self.train_pieces, self.genres, s.context, VALID_SEED,
                             t.eval_batches * s.batch_size, length_dropout=1.0)  # as held out: length not told,
        # windows drawn uniformly (no edge share): validation bits per event stay comparable across configs
        self.valid = list(torch.utils.data.DataLoader(valid, batch_size=s.batch_size, shuffle=False))

    def loss(self, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Mean bits per event of the windows; the genre dropped to "no genre" with ``genre_dropout``.  With a
        length head, plus ``score_tier.length_head`` x its mean bits for the time left to END, over the
        positions of whole pieces in windows not told their length, and over each whole piece's opening (its
        length from its genre alone, the choice ``choose_length`` makes)."""
        device, m = self.accelerator.device, self.unwrapped
        tokens, genre = batch["tokens"].to(device), batch["genre"].clone()
        drop = torch.rand(genre.shape, generator=gen) < self.s.genre_dropout
        genre[drop] = self.n_genres
        x, y = tokens[:, :-1], tokens[:, 1:]
        mask = y != m.cfg.pad_token
        offset, total = batch["offset"].to(device), batch["total"].to(device)
        out = self.model(x, genre.to(device), offset, total, batch["held"].to(device), with_left=m.left is not None,
                         semitones=batch["semitones"].to(device))
        logits = out[0] if m.left is not None else out  # (B, C, V)
        bits = m.nll_bits(logits, y, mask)  # (B, C)
        n = mask.sum()
        loss = bits.sum() / n.clamp(min=1)
        if m.left is not None:
            length = batch["length"].to(device)
            target = m.left_targets(x, offset, length)  # (B, C), -1: none
            target[total >= 0] = -1  # told its length: the answer is an input
            ok = target >= 0
            if ok.any():
                left_bits = m.nll_bits(out[1], target, ok)  # (B, C)
                loss = loss + self.s.length_head * left_bits.sum() / ok.sum()
            whole = length >= 0
            if whole.any():  # every whole piece's length from its opening too (a window opens one in ~20)
                with torch.no_grad():  # the head reads the states detached anyway
                    h0, x0 = m._hidden(torch.full_like(genre, m.cfg.end_token)[:, None].to(device), genre.to(device),
                                       offset=torch.zeros_like(length), with_input=True)  # (B, 1, W) each
                first = m.remain_id(length, length)[:, None]  # (B, 1)
                open_bits = m.nll_bits(m._left(h0, x0), first, whole[:, None])
                loss = loss + self.s.length_head * open_bits.sum() / whole.sum()
        return loss, int(n)

    @torch.inference_mode()
    def valid_bits(self) -> float:
        """Bits per event on the fixed validation windows (EMA weights, genre given), over processes."""
        acc, model = self.accelerator, self.unwrapped
        P, p = acc.num_processes, acc.process_index
        total = torch.zeros(2, dtype=torch.float64, device=acc.device)
        model.eval()
        with self.ema.applied(model):
            for batch in self.valid[p::P]:
                bits, mask = window_bits(model, *(batch[k].to(acc.device)
                                                  for k in ("tokens", "genre", "offset", "total", "held",
                                                            "semitones")))
                total[0] += bits.double().sum()
                total[1] += mask.sum()
        model.train()
        total = acc.reduce(total, "sum")
        return float(total[0] / total[1].clamp(min=1))

    def export(self, bits: float) -> None:
        final = stage_dir(self.run_dir, SCORE_KEY)
        tmp = final.parent / f".tmp-{SCORE_KEY}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        s = self.s  # how it was trained, beside what it is (the model config)
        extra = {"genres": self.genres, "stage": SCORE_KEY, "valid_bits_per_event": bits, "step": self.state.step,
                 "roll_fps": self.cfg.data.roll_fps,
                 "training": {"edge_share": s.edge_share, "excerpts": s.excerpts, "length_dropout": s.length_dropout,
                              "length_head": s.length_head, "genre_dropout": s.genre_dropout,
                              "transpose": s.transpose, "key_input": s.key_input, "stretch": s.stretch,
                              "batch_size": s.batch_size, "lr": s.lr}}
        with self.ema.applied(self.unwrapped):
            save_score_tier(self.unwrapped, tmp, extra)
        atomic_write_json(tmp / DATA_FILE, self.data)
        save_pieces(tmp / TRAIN_EVENTS, self.train_pieces, self.genres)
        swap_dirs(tmp, final, old=final.parent / f".old-{SCORE_KEY}-{os.getpid()}")


# ----------------------------------------------------------------------------- sampling


def sample_events(model, genre_id: int, seconds: float, seed: int, temperature: float, top_p: float,
                  prompt: list[int] | None = None, min_seconds: float = 0.0,
                  length_seconds: float | None = None, guidance: float | None = 0.0) -> list[int]:
    """Events written by the score tier for ``genre_id`` (``n_genres``: none): ``prompt`` (events, e.g. a MIDI
    file's) then new events, ending at the tier's own END (not before ``min_seconds`` of new music) or after
    ``seconds`` of new music.  ``length_seconds``: the length the whole piece (prompt included) is asked to
    have, told to a tier that learned lengths (``length_buckets``); None: not asked.  ``guidance``: classifier-free
    guidance towards the genre (``ScoreTransformer.generate``; None or 0: off)."""
    max_events = int(seconds * 200) + 16  # far more than any real score of that length needs
    length = None if length_seconds is None else max(1, int(round(length_seconds * STEPS_PER_SECOND)))
    return model.generate(genre_id, max_events=max_events, temperature=temperature, top_p=top_p, seed=seed,
                          prompt=prompt, max_seconds=seconds, seconds_of=token_seconds,
                          min_seconds=min(float(min_seconds), float(seconds)), length_steps=length,
                          guidance=float(guidance or 0.0))


def chosen_length(model, genre_id: int, seed: int, prompt: list[int] | None = None,
                  min_seconds: float = 0.0, temperature: float = 1.0) -> float:
    """Seconds of the piece (the prompt's included) a tier with a length head chooses for ``genre_id``
    (``models.score_tier.ScoreTransformer.choose_length``, its head drawn at ``temperature``), at least
    ``min_seconds`` more than the prompt."""
    steps = model.choose_length(genre_id, seed, prompt, min_steps=int(round(min_seconds * STEPS_PER_SECOND)),
                                temperature=temperature)
    return steps / STEPS_PER_SECOND


def training_lengths(run_dir, genre_id: int | None) -> list[float]:
    """Seconds of the score tier's whole training pieces of ``genre_id`` (None: all; excerpts left out), from
    ``train_events.npz``."""
    path = stage_dir(run_dir, SCORE_KEY) / TRAIN_EVENTS
    return lengths_of(load_pieces(path), genre_id) if path.is_file() else []
