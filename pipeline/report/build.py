"""The listening report (DESIGN 7 "Report folder"): one static ``index.html`` beside copies of the
media it shows, linked by relative paths, so it opens from ``file://`` and from any static host.

What it shows:

- the run: config summary, per-stage architecture, receptive field and memory in seconds, steps and
  wall time, loss and validation curves, and the latest evaluation (``metrics/evaluation_<split>.json``);
- every generation job: prompt, seed and parameters, a player for the audio and one per tier, the
  spectrogram (with the piano roll under it), timings and real-time factor, diagnostics;
- a grid per group of jobs that share their parameters but differ in genre or seed, with a real
  held-out clip of each genre (from the dataset's test split) beside the generated ones.

Plain HTML from a Jinja2 template (``templates/report.html.j2``, autoescaped): no JavaScript, no
external fonts or stylesheets.  The folder is built under a temporary name and swapped into place; a
folder that is not a report is never replaced.  Importable without Prefect.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import soundfile as sf
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from pipeline.errors import StrataError

GENERATOR = "strata report"  # <meta name="generator">: marks a folder this module may replace
CLIP_SECONDS = 4.0  # real held-out clips when no job says otherwise
MAX_CLIP_SECONDS = 10.0
PLAYABLE_RATE = 8000  # browsers refuse WAVs at lower rates (Chromium: 2 kHz is "not supported")
GRID_IGNORES = ("genre", "seed", "out_dir", "count")  # parameters a grid's jobs may differ in
HIDDEN_PARAMETERS = ("run_dir", "out_dir")

DIAGNOSTIC_ROWS = (  # (group, key, label): meta.json ``diagnostics`` as shown to people
    ("score", "chroma_agreement", "chroma agreement with the MIDI"),
    ("score", "chroma_chance", "chroma agreement by chance (shuffled frames)"),
    ("score", "chroma_lift", "chroma lift (agreement - chance)"),
    ("score", "chroma_reference", "chroma agreement of a FluidSynth rendering"),
    ("noise", "flatness_median", "median spectral flatness (1 s windows)"),
    ("noise", "flatness_threshold", "flatness threshold (noise)"),
    ("noise", "noisy_share", "share of windows above the threshold"),
    ("noise", "first_noisy_seconds", "noise collapse: first window above the threshold (s)"),
    ("length", "seconds", "length (s)"),
    ("length", "ended_by_end_class", "ended by the end class"),
    ("resynth", "lsd_db", "LSD to the real audio (dB)"),
    ("resynth", "lsd_upsampled_db", "LSD of plain upsampling (dB)"),
    ("resynth", "lsd_high_db", "LSD above the coarse Nyquist (dB)"),
    ("resynth", "lsd_upsampled_high_db", "LSD of upsampling above the coarse Nyquist (dB)"),
)

EVALUATION_COLUMNS = (  # (key in a stage row of the evaluation JSON, column label)
    ("bits_per_sample", "bits/sample"),
    ("linear_baseline_bits_per_sample", "linear baseline"),
    ("bits_per_sample_without_conditioning", "without conditioning"),
    ("bits_per_sample_without_roll", "without roll"),
    ("bits_per_sample_without_genre", "without genre"),
    ("bits_per_sample_short_context", "short context"),
)


class ReportError(StrataError):
    """A report input that is missing or unusable, or an output folder that is not a report."""


@dataclass
class Job:
    """One job folder and its meta.json; ``key`` names its media folder in the report."""

    folder: Path
    meta: dict
    key: str

    @property
    def params(self) -> dict:
        return self.meta.get("parameters") or {}

    @property
    def genre(self) -> str | None:
        genres, gid = self.meta.get("genres") or [], self.meta.get("genre_id")
        if gid is not None and 0 <= gid < len(genres):
            return genres[gid]
        return self.params.get("genre")

    @property
    def label(self) -> str:
        """What was asked for: genre, MIDI file, audio prompt, re-synthesis."""
        p, parts = self.params, []
        if self.genre:
            parts.append(self.genre)
        for key, what in (("midi", "MIDI"), ("prompt", "continues"), ("resynth", "re-synthesis of")):
            if p.get(key):
                parts.append(f"{what} {Path(p[key]).name}")
        return ", ".join(parts) or "unconditioned"


@dataclass
class Clip:
    """A real held-out clip of one genre, written into the report."""

    genre: str
    track: str
    split: str
    seconds: float
    audio: str  # relative paths inside the report
    image: str


@dataclass
class ReportResult:
    """Where the report went and how big it is."""

    folder: Path
    files: int
    bytes: int
    jobs: int
    clips: int
    evaluation: Path | None
    skipped: list[str] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.folder / "index.html"

    def line(self) -> str:
        return (f"report: {self.index} ({self.jobs} jobs, {self.clips} real clips, "
                f"{self.files} files, {self.bytes / 1e6:.1f} MB)")


# ----------------------------------------------------------------------------- inputs


def find_jobs(paths) -> tuple[list[Job], list[str]]:
    """Job folders (a folder with meta.json) or folders of them -> jobs oldest first, and skip reasons."""
    jobs, skipped, seen = [], [], set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path}: jobs folder does not exist")
        folders = [path] if (path / "meta.json").is_file() else sorted(
            p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file())
        for folder in folders:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                skipped.append(f"{folder}: unreadable meta.json ({e})")
                continue
            if not (folder / "audio.wav").is_file():
                skipped.append(f"{folder}: no audio.wav")
                continue
            jobs.append(Job(folder, meta, ""))
    jobs.sort(key=lambda j: (str(j.meta.get("created_utc", "")), j.folder.name))
    for i, job in enumerate(jobs):
        job.key = f"{i:03d}-{_safe(job.folder.name)}"
    return jobs, skipped


def find_evaluation(run_dir) -> Path | None:
    """The run's latest evaluation JSON (``metrics/evaluation_<split>.json``), if any."""
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.run import evaluation_glob

    found = sorted(Path(run_dir).glob(evaluation_glob()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_evaluation(path) -> dict:
    """The DESIGN 6 evaluation JSON (also accepts ``docs/results``' wrapper ``{"evaluation": {...}}``)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the evaluation JSON ({e})") from None
    d = d.get("evaluation", d) if isinstance(d, dict) else d
    if not isinstance(d, dict) or not isinstance(d.get("stages"), list):
        raise ReportError(f"{path}: not an evaluation JSON (no stages)")
    return d


def stage_facts(run_dir) -> list[dict]:
    """Per exported stage: model.json, parameter count, training summary (no weights read)."""
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.run import read_result, result_path, stage_dir, stages_dir

    out = []
    folders = sorted((p for p in stages_dir(run_dir).glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    for folder in folders:
        k = int(folder.name)
        try:
            model = json.loads((folder / "model.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        weights = stage_dir(run_dir, k) / "model.safetensors"
        result = read_result(run_dir, k) if result_path(run_dir, k).is_file() else {}
        out.append({"index": k, "model": model, "parameters": parameter_count(weights), "result": result})
    return out


def parameter_count(path: Path) -> int | None:
    """Number of weights in a safetensors file, from its JSON header alone."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


# ----------------------------------------------------------------------------- media


class Media:
    """Files of the report folder under construction; every path handed out is relative."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def target(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def copy(self, src: Path, rel: str) -> str | None:
        """Copy ``src`` to ``rel`` (readable by a web server: mode 644); None when it is absent."""
        if not Path(src).is_file():
            return None
        shutil.copyfile(src, self.target(rel))
        return rel

    def wav(self, src: Path, rel: str) -> str | None:
        """A WAV as browsers play it: copied, or resampled to ``PLAYABLE_RATE`` when slower."""
        if not Path(src).is_file():
            return None
        if sf.info(str(src)).samplerate >= PLAYABLE_RATE:
            return self.copy(src, rel)
        audio, rate = sf.read(str(src), dtype="float32")
        return self.write_wav(audio, rate, rel)

    def write_wav(self, audio: np.ndarray, rate: int, rel: str) -> str:
        """Float audio as 16-bit WAV, resampled (band-limited: the same sound) when below ``PLAYABLE_RATE``."""
        # local: keeps torch out of `import pipeline.report.build` until this runs
        from pipeline.corpus.audio import resample
        from pipeline.generation.jobs import write_wav

        if rate < PLAYABLE_RATE:
            audio, rate = resample(audio, rate, PLAYABLE_RATE), PLAYABLE_RATE
        write_wav(self.target(rel), audio, rate)
        return rel


def plot_curves(run_dir, stages: list[int], path: Path) -> Path | None:
    """Training loss and validation bits vs step, one panel per stage; None without metrics."""
    # local: keeps matplotlib, torch out of `import pipeline.report.build` until this runs
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipeline.run import read_metrics

    rows = {k: read_metrics(run_dir, k) for k in stages}
    rows = {k: r for k, r in rows.items() if r}
    if not rows:
        return None
    fig = Figure(figsize=(3.6 * len(rows), 2.8), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, (k, r) in zip(axes, rows.items()):
        for name, style in (("loss", "-"), ("valid_bits", "o--")):
            pts = [(row["step"], row[f"stage{k}/{name}"]) for row in r if f"stage{k}/{name}" in row]
            if pts:
                ax.plot(*zip(*pts), style, label="train loss" if name == "loss" else "validation")
        ax.set_title(f"stage {k}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("bits per sample")
    fig.savefig(path, format="png")
    return path


def real_clips(data_dir, genres: list[str], seconds: float, media: Media) -> list[Clip]:
    """Per genre, the first ``seconds`` of a held-out track (test split, else valid) as WAV + spectrogram."""
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.corpus.audio import mulaw_decode
    from pipeline.corpus.dataset import load_manifest
    from pipeline.generation.spectrogram import plot_spectrogram

    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    bits = int(round(math.log2(manifest.get("classes", 256))))
    fine = max(int(r) for r in manifest["rates"])
    fps = int(manifest.get("roll_fps", 100))
    clips = []
    for i, genre in enumerate(genres):
        track = held_out_track(manifest, genre)
        if track is None:
            continue
        codes = np.load(data_dir / track["tiers"][str(fine)], mmap_mode="r")[: int(seconds * fine)]
        audio = mulaw_decode(np.asarray(codes), bits)
        roll = None
        if track.get("roll"):
            roll = np.load(data_dir / track["roll"], mmap_mode="r")[:, :, : int(len(audio) * fps / fine)]
        wav, png = f"media/real/{i:02d}.wav", f"media/real/{i:02d}.png"
        media.write_wav(audio, fine, wav)
        plot_spectrogram(audio, fine, media.target(png), roll=roll, roll_fps=fps,
                         title=f"real: {track['id']} ({len(audio) / fine:.2f} s)")
        clips.append(Clip(genre, track["id"], track["split"], len(audio) / fine, wav, png))
    return clips


def held_out_track(manifest: dict, genre: str) -> dict | None:
    """The genre's first test-split track (by id), else its first validation track."""
    for split in ("test", "valid"):
        tracks = sorted((t for t in manifest["tracks"] if t["genre"] == genre and t["split"] == split),
                        key=lambda t: t["id"])
        if tracks:
            return tracks[0]
    return None


def copy_job_media(job: Job, media: Media) -> dict:
    """The job's audio, tiers and spectrogram under ``media/jobs/<key>/``."""
    base = f"media/jobs/{job.key}"
    rates = [int(r) for r in job.meta.get("rates") or []]
    return {
        "audio": media.wav(job.folder / "audio.wav", f"{base}/audio.wav"),
        "tiers": {r: media.wav(job.folder / f"tier_{r}.wav", f"{base}/tier_{r}.wav") for r in rates},
        "spectrogram": media.copy(job.folder / "spectrogram.png", f"{base}/spectrogram.png"),
        "score": media.copy(job.folder / "score.mid", f"{base}/score.mid"),  # None when the piece had no score
    }


# ----------------------------------------------------------------------------- HTML pieces


def _safe(name: str) -> str:
    """A file name made of letters, digits, dot, dash and underscore only."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:80] or "item"


def fmt(v, digits: int = 3) -> str:
    """Numbers for people: floats to ``digits`` decimals, None as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, digits) for x in v)
    return str(v)


def _cell(v) -> str:
    """A table cell's text: markup as it is (``Raw``), anything else through ``fmt`` (then escaped)."""
    return v if isinstance(v, Markup) else fmt(v)


_ENV = Environment(loader=PackageLoader("pipeline.report", "templates"), autoescape=True,
                   undefined=StrictUndefined, keep_trailing_newline=True)
_ENV.filters.update(fmt=fmt, cell=_cell, url=quote)
_T = _ENV.get_template("report.html.j2").module  # the page's parts (macros), each returns Markup


def table(head: list[str], rows: list[list], caption: str | None = None, first_is_header: bool = True) -> str:
    """A scrollable ``<table>``; cells are escaped unless wrapped in ``Raw``."""
    return _T.table(head, rows, caption, first_is_header)


Raw = Markup  # HTML already escaped


def player(rel: str | None, label: str) -> str:
    """An ``<audio>`` player with a download link inside (shown where audio is not supported)."""
    return _T.player(rel, label)


def figure(rel: str | None, alt: str, caption: str, css: str = "") -> str:
    return _T.figure(rel, alt, caption, css)


def definition_list(items: list[tuple[str, object]]) -> str:
    return _T.definition_list(items)


STYLE = """
:root { color-scheme: light dark; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5;
       max-width: 72rem; margin: 0 auto; padding: 1rem; }
img { max-width: 100%; height: auto; }
audio { width: 100%; max-width: 30rem; display: block; }
figure { margin: 0.5rem 0; }
figcaption, caption { font-size: 0.9rem; text-align: left; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #8886; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
td { font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 1rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
article { border-top: 2px solid #8886; padding-top: 0.5rem; margin-top: 1.5rem; }
.tiers { list-style: none; padding: 0; }
.grid td { min-width: 14rem; }
.thumb img { max-width: 18rem; }
pre { overflow-x: auto; font-size: 0.85rem; }
nav ul { padding-left: 1.2rem; }
"""


def page(title: str, nav: list[tuple[str, str]], body: list[str]) -> str:
    """The whole document: semantic, no scripts, no external resources."""
    return str(_T.page(title, nav, body, GENERATOR, Markup(STYLE)))


# ----------------------------------------------------------------------------- sections


def run_section(run_dir: Path, cfg, facts: list[dict], curves: str | None, config_text: str) -> str:
    """Config summary, per-stage architecture and training, curves."""
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.config import config_to_dict

    d = config_to_dict(cfg)
    genres = run_genres(facts)
    summary = [("run folder", str(run_dir)), ("tier rates (Hz)", d["data"]["rates"]),
               ("mu-law bits", d["data"]["mu_bits"]), ("piano roll frames/s", d["data"]["roll_fps"]),
               ("genres", ", ".join(genres or []) or "-"), ("stages", len(facts))]
    rows = [stage_row(f) for f in facts]
    head = ["stage", "rate (Hz)", "head", "layers", "channels (residual / gate / skip)", "conditioning",
            "weights", "receptive field", "history memory", "lookahead", "steps", "wall time",
            "best validation bits (step)", "stopped by"]
    return _T.run_section(summary, head, rows, curves, list(d.get("generate", {}).items()), config_text)


def stage_row(f: dict) -> list:
    """One stage's table row: architecture, memory in seconds, training summary."""
    m, r = f["model"], f["result"]
    c = m.get("config", {})
    rate = c.get("rate") or 1
    conds = [name for name, on in (("genre", c.get("use_genre")), ("roll", c.get("use_roll")),
                                   ("tier below", c.get("use_tier_below") and f["index"] > 0),
                                   ("history", (c.get("history") or {}).get("enabled")),
                                   ("score taps", (c.get("score") or {}).get("enabled"))) if on]

    def secs(n):
        return None if n is None else f"{n} ({n / rate:.3g} s)"

    best = None if "best_valid_bits" not in r else f"{r['best_valid_bits']:.3f} ({r.get('best_step')})"
    wall = None if "seconds" not in r else f"{r['seconds'] / 60:.1f} min"
    layers = None if c.get("dilation_cycles") is None else c["dilation_cycles"] * c.get("cycle_length", 1)
    chans = "/".join(str(c.get(k, "-")) for k in ("residual_channels", "gate_channels", "skip_channels"))
    params = None if f["parameters"] is None else f"{f['parameters']:,}"
    return [f["index"], rate, c.get("head"), layers, chans, ", ".join(conds) or "-", params,
            secs(m.get("receptive_field")), secs(m.get("history_receptive_field") or None), secs(m.get("lookahead")),
            r.get("steps", (m.get("extra") or {}).get("step")), wall, best, r.get("stopped")]


def evaluation_section(ev: dict, source: str) -> str:
    """Held-out bits per sample per stage, ablations, baselines."""
    rows = [[s.get("index"), s.get("rate"), *(s.get(k) for k, _ in EVALUATION_COLUMNS)] for s in ev["stages"]]
    head = ["stage", "rate (Hz)", *(label for _, label in EVALUATION_COLUMNS)]
    b = ev.get("baselines") or {}
    limit = ev.get("max_seconds")
    scope = f", the first {limit:g} s of each" if limit else ""
    items = [("cascade bits per fine-tier sample", ev.get("cascade_bits_per_sample")),
             ("unigram (fine tier)", b.get("unigram_bits_per_sample")),
             ("linear AR (fine tier alone)", b.get("linear_ar_bits_per_sample")), ("source", source)]
    caption = (f"Held-out bits per sample ({ev.get('split', '?')} split: {ev.get('tracks', '?')} tracks, "
               f"{fmt(ev.get('seconds'), 1)} s{scope}); lower is better")
    return _T.evaluation_section(head, rows, caption, items)


def job_article(job: Job, files: dict) -> str:
    """One job: prompt, parameters, players (output and each tier), spectrogram, timings, diagnostics."""
    m, p = job.meta, job.params
    rates = [int(r) for r in m.get("rates") or []]
    prompt = [("asked for", job.label), ("seed", m.get("seed")), ("variation", m.get("variation")),
              ("seconds", m.get("seconds")), ("score (piano roll) from", m.get("roll_source")),
              ("ended by the model", m.get("ended_by_model")), ("created (UTC)", m.get("created_utc"))]
    tiers = [(k, r, played_at(r)) for k, r in enumerate(rates)]
    params = [[k, v] for k, v in p.items() if k not in HIDDEN_PARAMETERS]
    return _T.job_article(job, m, files, prompt, tiers, params, timings_table(m.get("timings") or {}),
                          diagnostics_table(m.get("diagnostics") or {}))


def played_at(rate: int) -> str:
    return f" (played at {PLAYABLE_RATE} Hz)" if rate < PLAYABLE_RATE else ""


def timings_table(t: dict) -> str:
    """Per-stage wall time and real-time factor (wall seconds per audio second)."""
    if not t.get("stages"):
        return ""
    rows = [[s.get("stage"), s.get("rate"), s.get("samples"), s.get("wall_seconds"), s.get("real_time_factor"),
             s.get("samples_per_second")] for s in t["stages"]]
    rows.append(["total", None, None, t.get("total_wall_seconds"), t.get("real_time_factor"), None])
    return table(["stage", "rate (Hz)", "samples", "wall s", "real-time factor", "samples/s"], rows,
                 caption=f"Timings (batch {fmt(t.get('batch'))}, {fmt(t.get('threads'))} threads; "
                         "real-time factor = wall seconds per second of audio)")


def diagnostics_rows(d: dict) -> list[list]:
    """[label, value] rows of a job's diagnostics: score agreement, noise, length, tier consistency."""
    rows = [[label, (d.get(group) or {}).get(key)]
            for group, key, label in DIAGNOSTIC_ROWS if key in (d.get(group) or {})]
    rows += [[f"tier SNR at {rate} Hz (dB): consistency with the tier below", v]
             for rate, v in ((d.get("tiers") or {}).get("snr_db") or {}).items()]
    return rows


def diagnostics_table(d: dict) -> str:
    if not d:
        return ""
    return _T.diagnostics_table(str(d["error"]) if "error" in d else None, diagnostics_rows(d))


def grid_groups(jobs: list[Job]) -> list[list[Job]]:
    """Groups of two or more jobs with the same parameters apart from genre, seed and batch."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        key = json.dumps({k: v for k, v in job.params.items() if k not in GRID_IGNORES}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(job)
    return [g for g in groups.values() if len(g) > 1]


def grid_section(i: int, group: list[Job], files: dict[str, dict], clips: dict[str, Clip]) -> str:
    """Rows: genres; columns: a real clip of the genre, then each (seed, variation)."""
    genres = sorted({j.genre or "" for j in group})
    columns = sorted({(j.meta.get("seed"), j.meta.get("variation", 0)) for j in group}, key=str)
    real = any(g in clips for g in genres)
    head = ["genre", *(["real (held out)"] if real else []), *(f"seed {s}, variation {v}" for s, v in columns)]
    rows = []
    for genre in genres:
        row: list = [genre or "no genre"]
        if real:
            c = clips.get(genre)
            row.append(Raw(cell(c.audio, c.image, f"real {genre}: {c.track}") if c else "-"))
        for s, v in columns:
            job = next((j for j in group if (j.genre or "") == genre
                        and (j.meta.get("seed"), j.meta.get("variation", 0)) == (s, v)), None)
            row.append(Raw("-" if job is None else cell(files[job.key]["audio"], files[job.key]["spectrogram"],
                                                        f"{job.label}, seed {s}", f"#{job.key}")))
        rows.append(row)
    shared = [[k, v] for k, v in group[0].params.items() if k not in GRID_IGNORES + HIDDEN_PARAMETERS]
    return _T.grid_section(i, len(group), head, rows, shared)


def cell(audio: str | None, image: str | None, label: str, href: str | None = None) -> str:
    return _T.cell(audio, image, label, href)


def clips_section(clips: list[Clip], data_dir: Path) -> str:
    """The real held-out clips, one per genre."""
    return _T.clips_section(clips, str(data_dir))


# ----------------------------------------------------------------------------- the report


def build_report(run_dir, out_dir, jobs=(), data_dir=None, evaluation=None,
                 clip_seconds: float | None = None) -> ReportResult:
    """Write the report folder ``out_dir`` (``index.html`` + ``media/``) and return where it went.

    ``jobs``: job folders or folders of them; ``data_dir``: a dataset for real held-out clips;
    ``evaluation``: an evaluation JSON (default: the run's latest, ``metrics/evaluation_<split>.json``).
    """
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.run import read_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: run folder does not exist")
    cfg = read_config(run_dir)
    check_out(out_dir, [run_dir, *map(Path, jobs), *([Path(data_dir)] if data_dir else [])])
    found, skipped = find_jobs(jobs)
    ev_path = Path(evaluation) if evaluation else find_evaluation(run_dir)
    ev = read_evaluation(ev_path) if ev_path else None
    facts = stage_facts(run_dir)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        media = Media(tmp)
        body, nav, n_clips = write_body(run_dir, cfg, facts, found, skipped, ev, ev_path, data_dir,
                                        clip_seconds, media)
        title = f"Strata listening report: {'/'.join(run_dir.resolve().parts[-2:])}"
        (tmp / "index.html").write_text(page(title, nav, body), encoding="utf-8")
        publishable(tmp)
        place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files, size = folder_size(out_dir)
    return ReportResult(out_dir, files, size, len(found), n_clips, ev_path, skipped)


def write_body(run_dir, cfg, facts, jobs, skipped, ev, ev_path, data_dir, clip_seconds, media: Media):
    """Copy media and build the sections; returns (sections, nav entries, real clips written)."""
    # local: keeps torch out of `import pipeline.report.build` until this runs
    from pipeline.run import config_path

    curves = plot_curves(run_dir, [f["index"] for f in facts], media.target("media/run/curves.png"))
    body = [run_section(run_dir, cfg, facts, curves and "media/run/curves.png", config_path(run_dir).read_text())]
    nav = [("run", "The run")]
    if ev is not None:
        body.append(evaluation_section(ev, str(ev_path)))
        nav.append(("evaluation", "Evaluation"))
    files = {job.key: copy_job_media(job, media) for job in jobs}
    clips: list[Clip] = []
    if data_dir is not None:
        genres = sorted({j.genre for j in jobs if j.genre}) or run_genres(facts)
        longest = max([j.meta.get("seconds") or 0 for j in jobs] + [CLIP_SECONDS])
        seconds = clip_seconds or min(MAX_CLIP_SECONDS, longest)
        clips = real_clips(data_dir, genres, seconds, media)
    groups = grid_groups(jobs)
    if groups:
        by_genre = {c.genre: c for c in clips}
        body.append(_T.grids_intro(bool(clips)))
        body += [grid_section(i, g, files, by_genre) for i, g in enumerate(groups)]
        body.append(Markup("</section>"))
        nav.append(("grids", "Side by side"))
    if clips:
        body.append(clips_section(clips, Path(data_dir)))
        nav.append(("real", "Real held-out clips"))
    body.append(jobs_section(jobs, files, skipped))
    nav.append(("jobs", f"Generation jobs ({len(jobs)})"))
    return body, nav, len(clips)


def run_genres(facts: list[dict]) -> list[str]:
    """The genres the run's stages were trained with (model.json)."""
    return next((list(f["model"]["genres"]) for f in facts if f["model"].get("genres")), [])


def jobs_section(jobs: list[Job], files: dict, skipped: list[str]) -> str:
    return _T.jobs_section([job_article(job, files[job.key]) for job in jobs], skipped, bool(jobs))


# ----------------------------------------------------------------------------- the folder


def is_report(folder: Path) -> bool:
    """A folder this module wrote (its index.html names the generator)."""
    index = folder / "index.html"
    try:
        return index.is_file() and f'content="{GENERATOR}"' in index.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def check_out(out_dir: Path, inputs: list[Path]) -> None:
    """The output must be new, empty, or an earlier report, and must not hold an input."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ReportError(f"{out_dir}: report folder is a file")
        if any(out_dir.iterdir()) and not is_report(out_dir):
            raise ReportError(f"{out_dir}: exists and is not a Strata report (refusing to replace it)")
    out = out_dir.resolve()
    for p in inputs:
        p = p.resolve()
        if p == out or out in p.parents:
            raise ReportError(f"{out_dir}: report folder would replace the input {p}")


def publishable(root: Path) -> None:
    """Folders 755 and files 644: readable from any static web server."""
    for folder, dirs, names in os.walk(root):
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)


def place(tmp: Path, out_dir: Path) -> None:
    """Swap the finished folder into place; the earlier report goes only once the new one is there."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".old-{out_dir.name}-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under a folder."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)
