"""README tables from the committed result JSONs, so the two cannot drift.

    python docs/results/tables.py            # rewrite the README's generated sections
    python docs/results/tables.py --check    # exit 1 if the README differs from the JSONs

A generated section sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
BENCH = HERE.parents[1] / "bench" / "results"


def absent(path: Path) -> str:
    """A result file a table leaves out: one warning line, and the note the README shows in its place."""
    rel = path.relative_to(README.parent).as_posix() if path.is_relative_to(README.parent) else str(path)
    print(f"warning: {rel} not found: its rows are left out of the README", file=sys.stderr)
    return f"Not shown: `{rel}` is missing."


def present(files, notes: list[str]):
    """(label, the JSON) of each (label, path) in ``files`` that exists; each missing one adds its note."""
    for label, path in files:
        if path.is_file():
            yield label, json.loads(path.read_text())
        else:
            notes.append(absent(path))


def _f(v, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def _bands(part: dict) -> str:
    """A fine-sampling summary part's median 1-2 / 2-4 / 4-8 kHz levels re 0-1 kHz, dB."""
    return " / ".join(f"{v:.1f}" for v in part["bands_db_median"].values())


def evaluation_table() -> str:
    """Bits per sample per stage, demo test split and the other soundfont, with the ablations."""
    rows = ["| audio | stage | rate | model | linear baseline | without conditioning (network / linear path) "
            "| without roll | without genre | short context |", "|" + " --- |" * 9]
    notes = []
    for name, r in present((("demo test split", HERE / "evaluation.json"),
                            ("other soundfont", HERE / "evaluation_other_soundfont.json")), notes):
        ev = r["evaluation"]
        for s in ev["stages"]:
            parts = ""
            if "bits_per_sample_network_without_conditioning" in s:
                parts = (f" ({_f(s['bits_per_sample_network_without_conditioning'])} / "
                         f"{_f(s['bits_per_sample_linear_without_conditioning'])})")
            rows.append(f"| {name} | {s['index']} | {s['rate'] // 1000} kHz | {_f(s['bits_per_sample'])} "
                        f"| {_f(s.get('linear_baseline_bits_per_sample'))} "
                        f"| {_f(s.get('bits_per_sample_without_conditioning'))}{parts} "
                        f"| {_f(s.get('bits_per_sample_without_roll'))} | {_f(s.get('bits_per_sample_without_genre'))} "
                        f"| {_f(s.get('bits_per_sample_short_context'))} |")
    ev = json.loads((HERE / "evaluation.json").read_text())
    e = ev["evaluation"]
    tail = (f"\n\nTest split: {e['tracks']} tracks, {e['seconds']:.0f} s; cascade "
            f"{_f(e.get('cascade_bits_per_sample'))} bits per 16 kHz sample against "
            f"{_f(e['baselines'].get('unigram_bits_per_sample'))} (unigram) and "
            f"{_f(e['baselines'].get('linear_ar_bits_per_sample'))} (linear AR of the 16 kHz tier). "
            f"Commit `{ev['commit'][:10]}`, `{ev['command']}`.")
    return "\n".join(rows) + tail + "".join(f" {n}" for n in notes)


def quality_table(folder: Path | None = None) -> str:
    """The quality targets, each measure beside its real-audio, reference and chance values and what
    could meet it; then the band levels of the stage variants, the continuation and the end class."""
    path = (folder or HERE) / "quality.json"
    if not path.is_file():
        return absent(path)
    q = json.loads(path.read_text())
    rows = ["| target | measured | real audio | reference | chance / baseline | met | what could meet it |",
            "|" + " --- |" * 7]
    for t in q["targets"]:
        chance = t.get("chance") if t.get("baseline") is None else t["baseline"]
        rows.append(f"| {t['target']} | {_value(t['value'])} | {_value(t.get('real'))} | {_value(t.get('reference'))} "
                    f"| {_value(chance)} | {'yes' if t['met'] else 'no'} | {t.get('could_meet', '-')} |")
    out = "\n".join(rows)
    for part in (_band_table(q), _continuation_table(q), _end_table(q), _noise_by_genre_table(q), _genre_line(q),
                 _estimated_roll_line(q)):
        if part:
            out += "\n\n" + part
    state = " (working tree dirty)" if q.get("dirty") else ""
    warnings = q.get("warnings") or []
    tail = f"\n\n{q['seconds_per_piece']:g} s pieces; commit `{q['commit'][:10]}`{state}, `{q['command']}`."
    if warnings:
        tail += " Warnings of the run: " + "; ".join(warnings) + "."
    return out + tail


BANDS = ("1-2 kHz", "2-4 kHz", "4-8 kHz")


def _band_table(q: dict) -> str:
    """Band levels (dB re 0-1 kHz, medians over pieces) of the cascade and its stage variants."""
    sd = q.get("stage_decisions") or {}
    levels = sd.get("median_levels") or {}
    if not levels:
        return ""
    rows = ["| what each stage decides (same seed) | " + " | ".join(BANDS) + " | difference from the model |",
            "|" + " --- |" * (len(BANDS) + 2)]
    diff = sd.get("median_difference_from_model") or {}
    for name, lv in levels.items():
        d = diff.get(name)
        rows.append(f"| {name.replace('_', ' ')} | " + " | ".join(_f(lv.get(b), ".1f") for b in BANDS)
                    + " | " + ("-" if not d else " / ".join(_f(d.get(b), "+.1f") for b in BANDS)) + " |")
    for name, key in (("real audio (same span)", "median_real"), ("plain rendering", "median_rendering")):
        if sd.get(key):
            rows.append(f"| {name} | " + " | ".join(_f(sd[key].get(b), ".1f") for b in BANDS) + " | |")
    rs = (q.get("resynthesis") or {}).get("mean_error_db") or {}
    if rs:
        rows.append("\nRe-synthesis of the real coarse tier, mean |band level - real| (dB): "
                    + ", ".join(f"{k.replace('_', ' ')} {_f(v, '.1f')}" for k, v in rs.items()) + ".")
    return "\n".join(rows)


def _continuation_table(q: dict) -> str:
    c = q.get("continuation") or {}
    by = c.get("by_hold") or {}
    if not by:
        return ""
    lo, hi = c.get("scored_seconds", [2, 8])
    rows = [f"| continuation, seconds {lo:g}-{hi:g} against the real continuation | prompt hold | generated "
            "| reference (the prompt) | chance (far segment of another track) | share |", "|" + " --- |" * 6]
    for hold, s in by.items():
        for key in ("chroma_cosine", "key_profile_correlation", "same_key"):
            m = s[key]
            rows.append(f"| {key.replace('_', ' ')} ({s['continuations']} cuts) | {hold} s | {_f(m['generated'])} "
                        f"| {_f(m['reference'])} | {_f(m['chance'])} | {_f(m['share'], '.2f')} |")
    return "\n".join(rows)


def _end_table(q: dict) -> str:
    e = q.get("end_class") or {}
    rank = e.get("ranking") or {}
    rows = []
    for name in ("held_out_with_roll", "held_out_without_roll", "train_with_roll", "train_without_roll"):
        r = rank.get(name)
        if r:
            rows.append(f"| {name.replace('_', ' ')} | {r.get('ends', '-')} / {r.get('inside', '-')} "
                        f"| {_f(r.get('auc'))} "
                        f"| {_f(r.get('median_p_end_at_ends'), '.3g')} | {_f(r.get('median_p_end_inside'), '.3g')} |")
    if not rows:
        return ""
    head = ["| teacher-forced P(END), stage 0 | ends / inside | ROC AUC (chance 0.5) | median at ends "
            "| median inside |", "|" + " --- |" * 5]
    un = e.get("unscored") or {}
    tail = ""
    if un.get("seconds") is not None:
        tail = (f"\n\nUnprompted pieces without a score: {un['ended_by_end_class']} of {un['count']} ended by the end "
                f"class ({', '.join(_f(s, '.1f') for s in un['seconds'])} s; cap {un['cap_seconds']:g} s, median "
                f"training track {un['median_train_seconds']:.1f} s). The chord chain's scores would end the same "
                f"requests at {', '.join(_f(s, '.1f') for s in un['chain']['seconds'])} s, decided by "
                f"{un['chain']['decided_by']}.")
    return "\n".join(head + rows) + tail


def _noise_by_genre_table(q: dict) -> str:
    """Genre-prompted pieces per genre: noisy windows, pieces with >= 95% clean windows, flatness against real."""
    by = (q.get("noise") or {}).get("genre_pieces")
    if not by:
        return ""
    rows = ["| genre-prompted pieces | pieces | windows above the flatness threshold | pieces with >= 95% of "
            "windows under it | median flatness | real test audio's | ratio |", "|" + " --- |" * 7]
    for g, r in by.items():
        rows.append(f"| {g} | {r['pieces']} | {_f(r['share_above'], '.0%')} | {r['pieces_95pct_windows_clean']} "
                    f"of {r['pieces']} | {_f(r['median_flatness'], '.4f')} | {_f(r['real_median_flatness'], '.4f')} "
                    f"({r['real_tracks']} tracks) | {_f(r['flatness_ratio'], '.2f')}x |")
    return "\n".join(rows)


def _genre_line(q: dict) -> str:
    g = q.get("genre_recognition")
    if not g:
        return ""
    return (f"Genre recognition ({len(g['genres'])} genres, {g['clip_seconds']:g} s clips, {g['train_clips']} "
            f"training clips): real test clips {_f(g['real_test']['accuracy'], '.2f')} "
            f"({g['real_test']['clips']} clips), generated {_f(g['generated']['accuracy'], '.2f')} "
            f"({g['generated']['clips']} clips), chance {_f(g['chance'], '.2f')}." + _by_notes(g))


def _by_notes(g: dict) -> str:
    n = g.get("by_notes")
    if not n:
        return ""
    return (f" Judged by the notes basic-pitch hears in the same clips (density, polyphony, pitch spread, chords, "
            f"pitch classes; blind to timbre): real test clips {_f(n['real_test']['accuracy'], '.2f')}, "
            f"generated {_f(n['generated']['accuracy'], '.2f')}.")


def _estimated_roll_line(q: dict) -> str:
    e = q.get("estimated_rolls")
    if not e or not e.get("replaced") or e.get("with_estimated_roll") is None:  # no test track had MIDI
        return ""
    return (f"Stage 0 on the test split, bits per sample: with its rolls (MIDI where a track has it) "
            f"{_f(e['with_midi_roll'])}, with the {e['replaced']} MIDI rolls replaced by rolls estimated from the "
            f"audio (basic-pitch, as preprocess does for recordings) {_f(e['with_estimated_roll'])}, without any "
            f"roll {_f(e['without_roll'])}, linear baseline {_f(e['linear'])}.")


def recordings_table() -> str:
    """The same measures on recorded music without MIDI (bench/recordings.py; docs/results/recordings/):
    bits per sample per stage (with its estimated roll and without), then the quality targets."""
    return _corpus_table(HERE / "recordings", "recordings", "model (estimated roll)")


def four_genres_table() -> str:
    """The same on the four-genre corpus (``bench/recordings.py --scores``; docs/results/four_genres/): two
    genres of recordings (estimated rolls), two of other composers' scores (MIDI rolls, another soundfont)."""
    return _corpus_table(HERE / "four_genres", "four genres", "model (its roll)")


def _corpus_table(folder: Path, corpus: str, model: str) -> str:
    path = folder / "evaluation.json"
    if not path.is_file():
        return absent(path)
    ev = json.loads(path.read_text())
    e = ev["evaluation"]
    rows = [f"| {corpus}, test split | stage | rate | {model} | linear baseline | without roll "
            "| without genre |", "|" + " --- |" * 7]
    for st in e["stages"]:
        rows.append(f"| {e['tracks']} tracks, {e['seconds']:.0f} s | {st['index']} | {st['rate'] // 1000} kHz "
                    f"| {_f(st['bits_per_sample'])} | {_f(st.get('linear_baseline_bits_per_sample'))} "
                    f"| {_f(st.get('bits_per_sample_without_roll'))} | {_f(st.get('bits_per_sample_without_genre'))} |")
    tail = f"\n\nCommit `{ev['commit'][:10]}`, `{ev['command']}`."
    return "\n".join(rows) + tail + "\n\n" + quality_table(folder)


def _value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        skip = ("track", "roll_source", "source", "decided_by", "high_band_hz")
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items() if k not in skip and not isinstance(x, dict))
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        return _f(v, ".3g")
    return str(v)


def _bench(name: str, notes: list[str]) -> dict | None:
    path = BENCH / f"{name}.json"
    if not path.is_file():
        notes.append(absent(path))
        return None
    return json.loads(path.read_text())


def _x(v: float) -> str:
    return f"{v:,.0f}x"


def bench_table() -> str:
    """Preprocessing, start-up and orchestration, training and evaluation speed from bench/results."""
    rows = ["| benchmark | measure | result | goal |", "| --- | --- | --- | --- |"]
    used, missing = [], []
    pre = _bench("preprocess", missing)
    if pre:
        used.append(pre)
        by = {(r["input"], r["workers"]): r for r in pre["results"] if r["name"] == "pipeline"}
        for i, fmt in enumerate(dict.fromkeys(r["input"] for r in pre["results"])):
            two, one = by.get((fmt, 2)), by.get((fmt, 1))
            what = (f"demo corpus ({two['audio_seconds']:,.0f} s of audio, {two['files']} files) as {fmt} WAV"
                    if i == 0 else f"the same as {fmt} WAV (resampled to the 16 kHz mono fine tier)")
            rows.append(f"|{' `bench/preprocess.py`' if i == 0 else ''} | {what}, pipeline, 2 workers / 1 worker "
                        f"| {_x(two['realtime_factor'])} / {_x(one['realtime_factor'])} real time | >= 200x |")
    rec = _bench("preprocess_recordings", missing)
    if rec:  # recordings without MIDI: every track's roll estimated (basic-pitch), issue 20's >= 10x target
        used.append(rec)
        by = {(r["input"], r["workers"]): r for r in rec["results"] if r["name"] == "pipeline"}
        for i, fmt in enumerate(dict.fromkeys(r["input"] for r in rec["results"])):
            two, one = by.get((fmt, 2)), by.get((fmt, 1))
            what = (f"recordings without MIDI ({two['audio_seconds']:,.0f} s, {two['files']} files, "
                    f"{rec.get('tracks_without_midi')} rolls estimated by {rec.get('estimate')}) as {fmt} WAV"
                    if i == 0 else f"the same as {fmt} WAV")
            rows.append(f"| | {what}, pipeline, 2 workers / 1 worker | {_x(two['realtime_factor'])} / "
                        f"{_x(one['realtime_factor'])} real time | >= 10x |")
    orch = _bench("orchestration", missing)
    if orch:
        used.append(orch)
        m = {(r["mode"], r["command"]): r for r in orch["results"]}

        def both(command: str) -> str:
            srv, eph = m[("server", command)], m[("ephemeral", command)]
            return (f"{srv['median_seconds']:.1f} s / {eph['median_seconds']:.1f} s (CPU "
                    f"{srv['median_cpu_seconds']:.1f} s / {eph['median_cpu_seconds']:.1f} s)")

        rows.append("| `bench/orchestration.py` | fixed overhead per command: `strata preprocess` rerun, 1 file "
                    f"cached, Strata server up / ephemeral API | {both('preprocess 1 file cached')} "
                    "| <= 3 s (server up) |")
        rows.append("| | `strata preprocess` rerun, demo corpus (every file cached), server / ephemeral "
                    f"| {both('preprocess corpus cached')} | |")
        rows.append(f"| | floor: `strata server status` (Python and the command line) "
                    f"| {m[('server', 'status')]['median_seconds']:.2f} s | |")
        if orch.get("server_start_seconds"):
            rows.append(f"| | `strata server start` (once) | {orch['server_start_seconds']:.0f} s | |")
        t = {r["mode"]: r for r in orch.get("training", [])}
        if "server" in t and "ephemeral" in t:
            srv, eph = t["server"], t["ephemeral"]
            rows.append(f"| | flow process + Prefect API while the lanes of `strata train --max-minutes "
                        f"{srv['max_minutes']:g}` run (2 one-thread lanes), server / ephemeral "
                        f"| {srv['orchestration_core_percent']:.1f}% / {eph['orchestration_core_percent']:.1f}% "
                        "of a core | < 3% |")
            rows.append(f"| | the same over the whole command ({srv['wall_seconds']:.0f} s / {eph['wall_seconds']:.0f} "
                        "s: imports, API start-up, artifacts) "
                        f"| {srv['whole_command_orchestration_core_percent']:.1f}% / "
                        f"{eph['whole_command_orchestration_core_percent']:.1f}% of a core | |")
    tr = _bench("training", missing)
    if tr:
        used.append(tr)
        r = tr["results"]
        threads = tr["machine"]["threads"]
        speeds = " / ".join(format(x["samples_per_second"], ",.0f") for x in r)
        waits = " / ".join(format(100 * x["data_wait_share"], ".1f") + "%" for x in r)
        rows.append(f"| `bench/training.py` | {tr['config']} stages {'/'.join(str(x['stage']) for x in r)}, "
                    f"{threads} thread{'s' if threads > 1 else ''} each, {tr['steps']} steps, samples/s "
                    f"| {speeds} | |")
        rows.append(f"| | share of step time waiting for data | {waits} | < 10% |")
    ev = _bench("evaluation", missing)
    if ev:
        used.append(ev)
        for r in ev["results"]:
            workers = f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}"
            rows.append(f"| `bench/evaluation.py` | {ev['config']} preset, demo test split ({r['audio_seconds']:.0f} "
                        f"s): 3 stages with ablation rows + baselines, {workers} "
                        f"| {r['times_real_time']:.1f}x real time ({r['wall_seconds']:.0f} s; "
                        f"{r['cpu_seconds_per_audio_second']:.2f} CPU-s per audio s) | >= 2x |")
    notes = []
    for b in used:
        load = b["machine"].get("load_average", ["?"])[0]
        reps = f"median of {b['repeats']}" if b.get("repeats") else "one run"
        cmd = b.get("command") or "(command not recorded)"
        notes.append(f"`{cmd}` ({reps}, load {load})")
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + "." + "".join(f" {n}" for n in missing)


def draw_speed_table() -> str:
    """bench/results/generation_before_draw.json (the commit before the bucketed top-p cut and exp64) against
    generation_after_draw.json (then generation.json), run back to back on one machine: what the draw's rewrite
    bought (issue 22)."""
    return before_after_table("generation_before_draw.json", "generation_after_draw.json")


def history_speed_table() -> str:
    """bench/results/generation_before_history.json (the commit before the history stack stepped in numba and the
    score taps' kernels were cached) against generation_after_history.json, run back to back on one machine."""
    return before_after_table("generation_before_history.json", "generation_after_history.json", stages=True)


def before_after_table(before_name: str, after_name: str, stages: bool = False) -> str:
    """Two bench/generation.py JSONs of one machine, back to back: the fused rows' samples/s and the tiny cascade's
    real-time factors (with ``stages``, also each stage's on one core), before, after and their ratio."""
    notes: list[str] = []
    got = dict(present((("before", BENCH / before_name), ("after", BENCH / after_name)), notes))
    if len(got) < 2:
        return "\n".join(notes)
    before, after = got["before"], got["after"]
    rows = ["| row | before | after | after / before |", "| --- | --- | --- | --- |"]

    def key(r: dict) -> tuple:
        return r["engine"], r.get("weights", "float32"), r["batch"], r["receptive_field"]

    old = {key(r): r for r in before["results"]}
    for r in after["results"]:
        o = old.get(key(r))
        if o is None or r["engine"] != "fused":
            continue
        rows.append(f"| fused, {key(r)[1]}, batch {r['batch']}, receptive field {r['receptive_field']}: samples/s "
                    f"per stream | {o['samples_per_second']:,.0f} | {r['samples_per_second']:,.0f} "
                    f"| {r['samples_per_second'] / o['samples_per_second']:.2f} |")
    for name, label in (("fused", "tiny cascade, fused, one core: real-time factor"),
                        ("fused_cores", "tiny cascade, fused, stages side by side: real-time factor"),
                        ("fused_count8", "tiny cascade, fused, `--count 8`: real-time factor")):
        a, b = before["cascade"].get(name), after["cascade"].get(name)
        if a and b:
            rows.append(f"| {label} | {a['real_time_factor']:.3f} | {b['real_time_factor']:.3f} "
                        f"| {b['real_time_factor'] / a['real_time_factor']:.2f} |")
        if stages and name == "fused" and a and b:
            for sa, sb in zip(a["stages"], b["stages"]):
                rows.append(f"| ... its stage {sb['stage']} ({sb['rate']} Hz) | {sa['real_time_factor']:.3f} "
                            f"| {sb['real_time_factor']:.3f} | {sb['real_time_factor'] / sa['real_time_factor']:.2f} |")
    notes += [f"{k}: commit `{g['commit'][:10]}`, `{g['command']}`; {g['machine']['cpu']}, load average "
              f"{g['machine']['load_average'][0]}." for k, g in got.items()]
    return "\n".join(rows + [""] + notes)


def generation_table() -> str:
    """bench/results/generation.json: the engines on the reference stage, and the tiny cascade."""
    g = json.loads((BENCH / "generation.json").read_text())
    rate = g["matmul_flops_per_second"]
    rows = ["| engine | weights | batch | receptive field | samples/s per stream | samples/s in all | GFLOP/s "
            "| % of matmul rate | weights read per sample |", "|" + " --- |" * 9]
    for r in g["results"]:
        wb = r.get("weight_bytes_per_sample")  # later JSONs (issue 22)
        rows.append(f"| {r['engine']} | {r.get('weights', 'float32')} | {r['batch']} | {r['receptive_field']} "
                    f"| {r['samples_per_second']:,.1f} "
                    f"| {r['batch_samples_per_second']:,.0f} | {r['gflops']:.2f} "
                    f"| {100 * r['share_of_matmul_rate']:.1f}% | {'-' if wb is None else f'{wb / 1e6:.2f} MB'} |")
    if g.get("cache_bytes"):
        rows.append("\nThis machine's caches per core: " + ", ".join(
            f"{k} {v / 1024:,.0f} KiB" for k, v in g["cache_bytes"].items())
            + " (where the weights a sample reads exceed L2, each step streams them from L3).")
    c = g["cascade"]
    rows += ["", "| tiny cascade: real-time factor, wall (CPU) | "
             + " | ".join(f"{s['rate'] // 1000} kHz" for s in c["fused"]["stages"]) + " | total |",
             "|" + " --- |" * (len(c["fused"]["stages"]) + 2)]

    def rtf(x: dict) -> str:
        cpu = x.get("cpu_real_time_factor")
        return f"{x['real_time_factor']:.3f}" + ("" if cpu is None else f" ({cpu:.3f})")

    cores = g["summary"].get("cores", 1)
    for name, label in (("reference", "reference engine, one core"), ("fused", "fused engine, one core"),
                        ("fused_cores", f"fused engine, {cores} cores (stages side by side)"),
                        ("fused_count8", f"fused engine, `--count 8`, {cores} cores")):
        if name in c:
            rows.append(f"| {label} | " + " | ".join(rtf(s) for s in c[name]["stages"])
                        + f" | **{rtf(c[name])}** |")
    m, s = g["machine"], g["summary"]
    st = g["stage"]
    fused1 = max((r for r in g["results"] if r["engine"] == "fused" and r["batch"] == 1
                  and r["receptive_field"] == st["receptive_field"]), key=lambda r: r["samples_per_second"])
    fmt1 = fused1.get("weights", "float32")
    fused64 = next(r for r in g["results"] if r["engine"] == "fused" and r["batch"] == 64
                   and r["receptive_field"] == st["receptive_field"])
    best = min(c[k]["real_time_factor"] for k in ("fused", "fused_cores") if k in c)

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    demo, missing = BENCH / "demo_generation.json", ""
    if not demo.is_file():
        missing = " " + absent(demo)
    else:
        d = json.loads(demo.read_text())
        n = len([r for r in d["rows"] if r["engine"] == "fused"])
        samp = {e: sum(r["sampling_seconds"] for r in d["rows"] if r["engine"] == e) for e in ("fused", "reference")}
        rows += ["", "| the demo's generation (`bench/demo_generation.py`, trained demo run) | fused | reference |",
                 "| --- | --- | --- |",
                 f"| {n} pieces of 4 s: sampling seconds | {samp['fused']:.1f} | {samp['reference']:.1f} |",
                 f"| the same, whole jobs (audio, spectrograms, diagnostics) | {d['total_wall_seconds']['fused']:.1f} "
                 f"| {d['total_wall_seconds']['reference']:.1f} |"]
    rows += ["", "| goal | measured | |", "| --- | --- | --- |",
             f"| tiny cascade, one piece: real-time factor <= 0.5 | {best:.3f} | {met(best <= 0.5)} |",
             f"| tiny cascade, one piece, one core: real-time factor <= 0.25 (issue 22) "
             f"| {c['fused']['real_time_factor']:.3f} | {met(c['fused']['real_time_factor'] <= 0.25)} |",
             f"| reference stage, batch 1: >= 16,000 samples/s (its fastest weights: {fmt1}) "
             f"| {fused1['samples_per_second']:,.0f} | {met(fused1['samples_per_second'] >= 16000)} |",
             f"| reference stage, batch 1: >= 30% of the matmul rate ({fmt1}) "
             f"| {100 * fused1['share_of_matmul_rate']:.1f}% | {met(fused1['share_of_matmul_rate'] >= 0.3)} |",
             f"| reference stage, batch 64: >= 50% of the matmul rate | {100 * fused64['share_of_matmul_rate']:.1f}% "
             f"| {met(fused64['share_of_matmul_rate'] >= 0.5)} |",
             f"| `--count 8` <= 2x the wall time of one piece | {s['count8_over_count1_wall']:.2f}x "
             f"| {met(s['count8_over_count1_wall'] <= 2)} |"]
    if fused1.get("weight_bytes_per_sample"):
        small = min((r for r in g["results"] if r.get("weight_bytes_per_sample") and r["engine"] == "fused"
                     and r["batch"] == 1), key=lambda r: r["weight_bytes_per_sample"])
        wb = small["weight_bytes_per_sample"]
        rows.append(f"| weights a batch-1 sample reads <= 1 MB (fits L2 on current x86 cores; its smallest weights: "
                    f"{small.get('weights', 'float32')}, {small['samples_per_second']:,.0f} samples/s) "
                    f"| {wb / 1e6:.2f} MB | {met(wb <= 1e6)} |")
    tail = (f"\n\nReal-time factors: wall seconds per second of audio (total in brackets: CPU seconds of all "
            f"the process's threads) for a {c['seconds']:g} s piece from a genre and a held chord, "
            f"{c['preset']} preset. Reference stage: {st['layers']} layers, residual "
            f"{st['residual_channels']}, gate {st['gate_channels']}, skip {st['skip_channels']}, "
            f"{st['classes']} classes, tier below and genre, linear path on: "
            f"{g['flops_per_sample'] / 1e6:.2f} MFLOP per sample; matmul rate {rate['before'] / 1e9:.0f} GFLOP/s "
            f"({rate['threads']} thread, measured in the same run). Fused over reference streaming: "
            f"{s['fused_over_cached_batch1']}x (batch 1), {s['fused_over_cached_batch64']}x (batch 64); "
            f"`--count 8` costs {s['count8_over_count1_wall']}x the wall time of one piece (both on {cores} cores; "
            f"the stages' walls overlap when they run side by side). Medians of "
            f"{len(g['results'][0]['runs'])} runs; {m['cpu']}, {m['cores']} cores, load average "
            f"{m['load_average'][0]}; `python bench/generation.py {' '.join(g.get('argv', []))}`.")
    return "\n".join(rows) + tail + missing


def faults_table() -> str:
    """bench/results/faults.json: kills survived, signals, fuzz cases and their outcomes."""
    f = json.loads((BENCH / "faults.json").read_text())
    r = f["results"]
    sig = r["signals"]
    worst = max(s["seconds"] for s in sig)
    rows = ["| attack | count | result |", "| --- | --- | --- |"]
    for phase, n in r["kills_survived"].items():
        what = phase.replace("train_accelerate_2", "train under `accelerate launch`, 2 processes")
        rows.append(f"| `kill -9` during {what} | {n} | nothing lost or half-written; a rerun (`--resume`) completes |")
    rows.append(f"| SIGTERM and Ctrl-C on {len({s['command'] for s in sig})} commands | {len(sig)} | one line each, "
                f"exit within {worst:.1f} s, {sum(s['orphans'] for s in sig)} orphaned processes |")
    for kind, n in r["fuzz_cases"].items():
        counts = r["details"].get(f"fuzz_{kind}", r["details"].get(kind + "s", r["details"].get(kind, {})))
        c = counts.get("counts", {}) if isinstance(counts, dict) else {}
        outcome = ", ".join(f"{v} {k}" for k, v in c.items()) if c else ""
        rows.append(f"| hostile {kind} files | {n} | {outcome} |")
    soak = r["details"].get("serve_soak")
    if soak:
        states = ", ".join(f"{n} {s}" for s, n in soak["states"].items())
        rows.append(f"| `strata serve` soak: {soak['seconds']:g} s, a job every {soak['interval']:g} s, "
                    f"`--limit {soak['limit']}` | {soak['due_runs']} due runs | {states}; {soak['job_folders']} "
                    f"distinct complete job folders; resident memory {soak['rss_mb']['second_quarter']:g} -> "
                    f"{soak['rss_mb']['last_quarter']:g} MB; {len(soak['problems'])} problems |")
    cats = ", ".join(f"{v} {k}" for k, v in r["errors_by_category"].items())
    runs = "; ".join(f"`{x['command']}` at `{x['commit']}`" for x in f.get("runs", []))
    return "\n".join(rows) + (f"\n\nOutcomes: {cats} (\"clear\": one line naming the input and the reason; "
                              f"\"ok\": the input works). Lost results: {r['lost']}; orphaned processes: "
                              f"{r['orphaned_processes']}; defects: {len(r['defects'])}. Runs: {runs}.")


def training_table() -> str:
    """What the run behind the results reached (docs/results/training.json, bench/training_summary.py)."""
    path = HERE / "training.json"
    if not path.is_file():
        return absent(path)
    r = json.loads(path.read_text())
    lines = ["| stage | steps | best validation | at step | minutes | stopped by |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k, row in r["stages"].items():
        name = "score tier" if k == "score" else f"stage {k}"
        lines.append(f"| {name} | {row['steps']} | {_f(row['best_valid_bits'])} {row['unit']} | {row['best_step']} | "
                     f"{row['seconds'] / 60:.1f} | {row['stopped']} |")
    lines.append(f"\nBudget {r['max_minutes']:g} minutes on {r['machine']['cores']} cores; commit "
                 f"`{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines)


SCORE_TIER_RUNS = (("demo run", "score_tier.json"), ("longer run", "score_tier_long.json"),
                   ("run with a clock, whole works", "score_tier_clock.json"),
                   ("the same, windows reaching the END", "score_tier_clock_ends.json"),
                   ("the same, told its length and the held pitches", "score_tier_length.json"),
                   ("the same, a tenth of windows at openings and ENDs", "score_tier_edges.json"),
                   ("the same, trained 6000 steps", "score_tier_steps.json"),
                   ("rebuilt corpus, 3000 steps, cut scores read as whole pieces (control)",
                    "score_tier_excerpts_control.json"),
                   ("the same corpus, cut scores read as excerpts (no END, no length)", "score_tier_excerpts.json"),
                   ("the same, an excerpt's ending windows moved to whole pieces (reverted)",
                    "score_tier_excerpts_ends.json"),
                   ("excerpts, not told the length in 60% of windows (0.3 above)", "score_tier_length_dropout.json"),
                   ("excerpts, the smooth clock (not adopted)", "score_tier_smooth_clock.json"),
                   ("excerpts, a length head on the detached states alone (replaced)",
                    "score_tier_length_head_detached.json"),
                   ("excerpts, the length head (states and inputs, detached; adopted)", "score_tier_length_head.json"))


FOUR_GENRE_SCORE_TIER_RUNS = (("four-genre run (its budget)", "four_genres/score_tier.json"),
                              ("the same corpus, 3000 steps", "four_genres/score_tier_steps.json"),
                              ("the same, with the length head", "four_genres/score_tier_length_head.json"),
                              ("the same, its cut recordings marked as excerpts (metadata.csv; other4/data_ex)",
                               "four_genres/score_tier_guidance_w0.json"))


def four_genres_score_tier_table() -> str:
    """The score tier of the four-genre corpus (estimated scores of recordings beside other composers' MIDI)."""
    return score_tier_table(FOUR_GENRE_SCORE_TIER_RUNS, "four-genre test split")


def score_tier_table(files=SCORE_TIER_RUNS, test_label: str = "demo test split") -> str:
    """The score tier (docs/results/score_tier*.json, bench/score_tier.py): bits per event against the
    n-grams, novelty and style against the chain, lengths and speed; the demo run's and a longer run's."""
    runs, notes = [], []
    for label, file in files:
        path = HERE / file
        if path.is_file():
            runs.append((label, json.loads(path.read_text())))
        else:
            notes.append(absent(path))
    lines = ["| score tier | held-out scores | pieces | events | score tier | best n-gram (order) | unigram "
             "| fewer bits than the n-gram |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in runs:
        for name, key in ((test_label, "test"), ("another corpus (Essen folk songs, Monteverdi)", "other_corpus")):
            e = r.get(key)
            if not e:
                continue
            b = e["baselines"]
            lines.append(f"| {label}, step {r['run_steps']} | {name} | {e['pieces']} | {e['events']} | "
                         f"{_f(e['bits_per_event'])} | {_f(b['best'])} ({b['best_order']}) | {_f(b['unigram'])} | "
                         f"{100 * e['fewer_bits_than_best_ngram']:.0f}% |")
    lines += ["", "| score tier | genre | scores from | pieces | unseen chord changes | unseen onset 4-grams "
              "| longest copy, copied passage (s) | style overlap (mean) | polyphony overlap |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in runs:
        for genre, rows in r["scores"].items():
            for name, row in rows.items():
                if name == "density":  # score_openings_table's measure
                    continue
                n, st = row.get("novelty") or {}, row.get("style_overlap") or {}
                lines.append(f"| {label} | {genre} | {name} | {row['pieces']} | "
                             f"{_f(n.get('unseen_transitions'), '.2f')} | {_f(n.get('unseen_onset_4grams'), '.2f')} | "
                             f"{_f(n.get('longest_copy_seconds'), '.1f')}, "
                             f"{_f(n.get('longest_copied_passage_seconds'), '.1f')} | {_f(st.get('mean'), '.2f')} | "
                             f"{_f(st.get('polyphony'), '.2f')} |")
    for label, r in runs:
        sp = r["speed"]
        lines += ["", f"{label[0].upper() + label[1:]} ({r['n_params']:,} parameters, step {r['run_steps']}): "
                  f"{_lengths(r['lengths'])}{_end_reading(r)}; {sp['seconds_per_60s_of_score']:g} s to write 60 s of "
                  f"score on one thread. Commit `{r['commit'][:10]}`{' (dirty tree)' if r.get('dirty') else ''}, "
                  f"`{r['command']}`."]
    return "\n".join(lines + [f"\n{n}" for n in notes])


def _end_reading(r: dict) -> str:
    """Where the tier puts END on real whole pieces, and its length head against the training histogram (later
    JSONs only)."""
    out = ""
    h = r.get("length_head")
    if h and h.get("pieces"):
        out += (f"; the length head on {h['pieces']} held-out whole pieces: {_f(h['head_bits'])} bits per piece "
                f"length against {_f(h['histogram_bits'])} for the genre's histogram of training lengths, "
                f"{_f(h['within_half_to_twice_head_median'], '.0%')} of them within 0.5-2x its median choice")
    e = r.get("end_hazard")
    if e:
        def part(rows: dict) -> str:
            return ", ".join(f"{k} {v['survives_to_half']:.2f} / {v['survives_to_end']:.2f} / {v['end_at_end']:.3f} "
                             f"({v['pieces']})" for k, v in rows.items())
        out += ("; asked no length, the tier's chance of letting a real whole piece play to half its length / to its "
                f"last event / of ending it there (median, pieces): learned from {part(e['learned_from'])}; "
                f"held out {part(e['held_out']) or 'none'}")
    return out


def _lengths(ln: dict) -> str:
    """The length target's sentence: genre-prompted (and, in later JSONs, unconditional) scores."""
    def part(rows: dict, what: str) -> str:
        secs = ", ".join(f"{p['seconds']:g}" for p in rows["pieces"])
        cap = f"cap {rows['cap_seconds']:g} s" if "cap_seconds" in rows else "each capped at 2.5x its median"
        return (f"{rows['ended_within_range']} of {len(rows['pieces'])} {what} scores ended by their own end-of-piece "
                f"event within 0.5-2x the median length of the genre's training scores (seconds: {secs}; {cap})")

    if "pieces" in ln:  # the first JSONs: genre-prompted scores only
        return part(ln, "genre-prompted")
    out = part(ln["genre"], "genre-prompted") + "; " + part(ln["unconditional"], "unconditional")
    if "genre_told" in ln:  # a tier that learned lengths, asked a training piece's length
        g, u = ln["genre_told"], ln["unconditional_told"]
        out += _asked_sentence(
            g, u, "asked the length of a training piece of the genre (as `strata generate` asks without `--seconds`)",
            f"asked length (median error of those that ended {_f(g['median_relative_error_of_ended'], '.0%')} and "
            f"{_f(u['median_relative_error_of_ended'], '.0%')}; seconds asked -> written: ")
    if "genre_chosen" in ln:  # a tier with a length head, asked nothing: it chooses the length, then writes to it
        out += _asked_sentence(
            ln["genre_chosen"], ln["unconditional_chosen"], "asked nothing, the length chosen by the tier's length "
            "head (as `strata generate` asks such a tier without `--seconds`)",
            "chosen length (seconds chosen -> written: ")
    if "training_pieces" in ln:  # what the range target can reach
        out += ("; the training pieces themselves within 0.5-2x their genre's median: "
                + ", ".join(f"{k} {_f(v['share_within_half_to_twice_median'], '.0%')}"
                            for k, v in ln["training_pieces"].items()))
        if any("excerpts" in v for v in ln["training_pieces"].values()):  # medians of whole pieces only
            out += (" (medians of the whole pieces, excerpts left out: "
                    + ", ".join(f"{k} {_f(v['median_seconds'], 'g')} s of {v['pieces']} ({v['excerpts']} excerpts)"
                                for k, v in ln["training_pieces"].items()) + ")")
    return out


def _asked_sentence(g: dict, u: dict, how: str, after: str) -> str:
    """Genre-prompted (``g``) and unconditional (``u``) scores asked a length ``how``: how many ended in range and
    near the asked length, then ``after`` and each piece's seconds asked -> written."""
    return (f"; {how}: {g['ended_within_range']} of {g['of']} genre-prompted and {u['ended_within_range']} of "
            f"{u['of']} unconditional scores ended by their own END within that range, "
            f"{g['ended_within_10pct_of_asked']} and {u['ended_within_10pct_of_asked']} within 10% of the {after}"
            + ", ".join(f"{p['asked_seconds']:g} -> {p['seconds']:g}" for p in g["pieces"] + u["pieces"]) + ")")


GUIDANCE_RUNS = (("demo", "score_tier_guidance_w0.json"), ("demo", "score_tier_guidance_w1.json"),
                 ("demo", "score_tier_guidance_w2.json"),
                 ("four genres", "four_genres/score_tier_guidance_w0.json"),
                 ("four genres", "four_genres/score_tier_guidance_w1.json"),
                 ("four genres", "four_genres/score_tier_guidance_w2.json"))


def score_guidance_table() -> str:
    """The score tier's classifier-free guidance (bench/score_tier.py --score-guidance W): is the asked genre in
    the notes it writes (a classifier fitted on the training scores), at what cost in novelty, style and length."""
    lines = ["| corpus | guidance W | genre recognised in the tier's notes (clips) | per genre | the chain's | real "
             "held-out scores' (clips) | chance | unseen chord changes (per genre) | longest copy, copied passage (s) "
             "| style overlap "
             "(per genre) | genre scores ended in range, length chosen | 60 s of the first genre's score |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for corpus, file in GUIDANCE_RUNS:
        path = HERE / file
        if not path.is_file():
            notes.append(absent(path))
            continue
        r = json.loads(path.read_text())
        tier, chain = r["genre_by_notes"]["tier"], r["genre_by_notes"].get("chain")
        genres = list(r["scores"])
        per = " / ".join(_f(tier["generated_per_genre"].get(str(i), tier["generated_per_genre"].get(i)), ".2f")
                         for i in range(len(genres)))
        rows = [r["scores"][g]["tier"] for g in genres]
        unseen = " / ".join(_f((x["novelty"] or {}).get("unseen_transitions"), ".2f") for x in rows)
        copy = max((x["novelty"] or {}).get("longest_copy_seconds") or 0 for x in rows)
        passages = [(x["novelty"] or {}).get("longest_copied_passage_seconds") for x in rows]
        passage = "-" if None in passages else f"{max(passages):.1f}"  # absent from older JSONs
        style = " / ".join(_f((x["style_overlap"] or {}).get("mean"), ".2f") for x in rows)
        chosen = r["lengths"].get("genre_chosen")
        lines.append(f"| {corpus} | {r['sampling']['guidance']:g} | {tier['generated']:.2f} "
                     f"({tier['generated_clips']}) | {per} | {_f(chain and chain['generated'], '.2f')} "
                     f"| {tier['real_heldout']:.2f} ({tier['heldout_clips']}) "
                     f"| {tier['chance']:.2f} | {unseen} | {copy:.1f}, {passage} | {style} "
                     f"| {'-' if not chosen else str(chosen['ended_within_range']) + ' of ' + str(chosen['of'])} "
                     f"| {r['speed_genre']['seconds_per_60s_of_score']:g} s |")
        notes.append(f"{corpus}, W {r['sampling']['guidance']:g}: genres {', '.join(genres)}; score tier at step "
                     f"{r['run_steps']}; commit `{r['commit'][:10]}`{' (dirty tree)' if r.get('dirty') else ''}, "
                     f"`{r['command']}`.")
    return "\n".join(lines + [""] + notes)


def score_openings_table() -> str:
    """Note density of sampled scores against real ones (bench/score_openings.py), demo and recordings."""
    lines = ["| corpus | genre | scores | pieces | onsets per second (median) | no onset in the first 4 s | silent "
             "| repetition (2 s chroma, median) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes, by_score = [], []
    for corpus, path in (("demo", HERE / "score_openings.json"),
                         ("recordings", HERE / "recordings" / "score_openings.json")):
        if not path.is_file():
            notes.append(absent(path))
            continue
        r = json.loads(path.read_text())
        lines += [_density_row(corpus, genre, name, d) for genre, rows in r["genres"].items()
                  for name, d in rows.items() if d]
        g = r.get("genre_by_score")
        if g:
            by_score.append(f"| {corpus} | {g['train_clips']} | {g['real_heldout']:.2f} ({g['heldout_clips']}) | "
                            f"{g['generated']:.2f} ({g['generated_clips']}) | {g['chance']:.2f} |")
        notes.append(f"{corpus}: score tier at step {r['run_steps']}, {r['sampling']['seconds']:g} s scores asked "
                     f"that length; commit `{r['commit'][:10]}`, `{r['command']}`.")
        before = path.with_name("score_openings_before.json")
        if before.is_file():  # the same script on the previous tier's files (windows drawn uniformly)
            b = json.loads(before.read_text())
            lines += [_density_row(corpus, genre, "tier before", rows["tier"]) for genre, rows in b["genres"].items()
                      if rows.get("tier")]
            notes.append(f"{corpus}, tier before: step {b['run_steps']}, commit `{b['commit'][:10]}`, `{b['command']}` "
                         f"(the previous tier's files, as committed results at `31fdc28` used them).")
    return "\n".join(lines + [""] + _genre_by_score_lines(by_score) + notes)


def _genre_by_score_lines(rows: list[str]) -> list[str]:
    """Is the genre in the tier's notes?  The ``genre_by_score`` rows of the score openings JSONs (no audio)."""
    if not rows:
        return []
    return ["Genre recognised in the notes of the scores themselves, before any audio: a classifier fitted on 8 s "
            "clips of the real training scores (`score_metrics.genre_by_score`):", "",
            "| corpus | training clips | real held-out scores (clips) | the tier's scores (clips) | chance |",
            "| --- | --- | --- | --- | --- |", *rows, ""]


def _density_row(corpus: str, genre: str, name: str, d: dict) -> str:
    """One row of the score openings table from a ``note_density`` + repetition dict."""
    return (f"| {corpus} | {genre} | {name} | {d['pieces']} | {d['onsets_per_second_median']:.2f} | "
            f"{d['quiet_opening_share']:.0%} | {d['silent_share']:.0%} | {_f(d.get('repetition_median'), '.2f')} |")


def noise_trap_table() -> str:
    """Stage 1's noise trap run by run (bench/noise_trap.py), demo and recordings."""
    lines = ["| corpus | run | stage 1 trained with | own-past noise gain | stage 1 bits (below linear) | pieces "
             "| noisy 1 s windows, MIDI / genre | pieces with every tier SNR >= 20 dB "
             "| 1-2 / 2-4 / 4-8 kHz (dB re 0-1 kHz, median of the MIDI pieces, else of the genre pieces) "
             "| note F1 (MIDI pieces) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    files = (("demo", HERE / "noise_trap.json"), ("recordings", HERE / "recordings" / "noise_trap.json"),
             ("demo", HERE / "noise_trap_score_taps.json"),
             ("recordings", HERE / "recordings" / "noise_trap_score_taps.json"),
             ("demo", HERE / "noise_trap_steps.json"),
             ("other soundfont", HERE / "noise_trap_steps_other_soundfont.json"),
             ("demo", HERE / "noise_trap_high_band_taps.json"),
             ("four genres", HERE / "four_genres" / "noise_trap_high_band_taps.json"),
             ("demo, a fresh `make demo` at this session's presets (`demo_sp`)", HERE / "noise_trap_presets.json"))
    for corpus, r in present(files, notes):
        for name, run in r["runs"].items():
            tr = run["taps"]["1"].get("training") or {}
            how = ", ".join(f"{k} {v}" for k, v in tr.items() if k != "exported" and v) or "clean"
            if run["taps"]["1"].get("score_taps") is not None:
                how += f", score taps ({run['taps']['1']['score_taps'] or 'linear order'})"
            if tr.get("exported"):
                how += f" ({tr['exported']})"
            s1 = run["held_out"]["1"]
            m, g = run["summary"]["midi"], run["summary"]["genre"]
            both = [x for x in (m, g) if x]
            bands = " / ".join(_f(v, ".1f") for v in (m or g)["bands_db_median"].values())
            lines.append(f"| {corpus} | {name} | {how} | {run['taps']['1']['noise_gain']:.2f} | "
                         f"{s1['bits_per_sample']:.3f} ({s1['below_linear']:+.3f}) | "
                         f"{sum(x['pieces'] for x in both)} | "
                         f"{_f(m and m['noisy_share_mean'], '.0%')} / {_f(g and g['noisy_share_mean'], '.0%')} | "
                         f"{sum(x['pieces_all_tiers_snr_20db'] for x in both)} | {bands} | "
                         f"{_f(m and m['note_f1_mean'], '.2f')} |")
        notes.append(f"{corpus}: commit `{r['commit'][:10]}`, `{r['command']}`; held-out bits on the test split's "
                     f"first {r['max_seconds']:g} s of each track, pieces of {r['seconds']:g} s.")
    return "\n".join(lines + [""] + notes)


def quant_cost_table() -> str:
    """bench/results/quant_cost*.json: held-out bits per stage with its weights in bf16, int8 and int4 (issue 22)."""
    lines = ["| corpus | stage | rate | float32 bits per sample | bf16 (cost) | int8 (cost) | int4 (cost) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for corpus, q in present((("demo", BENCH / "quant_cost.json"),
                              ("recordings", BENCH / "quant_cost_recordings.json"),
                              ("demo, `make demo` at the presets (`demo_sp/run`)", BENCH / "quant_cost_int4.json"),
                              ("the same run, the test split rendered with the other soundfont",
                               BENCH / "quant_cost_int4_other_soundfont.json")), notes):
        for s in q["stages"]:
            cells = [f"{s[f'{fmt}_bits_per_sample']:.4f} ({s[f'{fmt}_cost_bits']:+.5f})"
                     if f"{fmt}_bits_per_sample" in s else "-" for fmt in ("bf16", "int8", "int4")]
            lines.append(f"| {corpus} | {s['stage']} | {s['rate']} | {s['float32_bits_per_sample']:.4f} "
                         f"| {' | '.join(cells)} |")
        notes.append(f"{corpus}: run `{q['run']}`, the {q['split']} split's first {q['max_seconds']:g} s of each "
                     f"track; commit `{q['commit'][:10]}`, `{q['command']}`.")
    return "\n".join(lines + [""] + notes)


def score_sampling_table() -> str:
    """docs/results/score_sampling.json: the score tier's (temperature, top-p) grid against novelty and style."""
    path = HERE / "score_sampling.json"
    if not path.is_file():
        return absent(path)
    s = json.loads(path.read_text())
    lines = ["| scores | temperature | top-p | style vs the genre's training scores | style vs held-out scores "
             "| unseen chord changes | longest copy (s), worst genre | novelty targets |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in [*s["settings"], *([s["chain"]] if s.get("chain") else [])]:
        lines.append(f"| {r['scores']} | {_f(r.get('temperature'), 'g')} | {_f(r.get('top_p'), 'g')} "
                     f"| {r['style_train_mean']:.2f} | {r['style_heldout_mean']:.2f} "
                     f"| {r['unseen_transitions_mean']:.2f} | {r['longest_copy_seconds']:.1f} "
                     f"| {'met' if r['novelty_targets_met'] else 'missed'} |")
    c = s["chosen"]
    return "\n".join(lines + ["", f"{s['pieces_per_genre']} scores of {s['seconds']:g} s per genre and setting "
                               f"(means over the genres; the unseen share excused for {', '.join(s['exempt'])}); "
                               f"chosen by style against the training scores: temperature {c['temperature']:g}, "
                               f"top-p {c['top_p']:g}. Commit `{s['commit'][:10]}`, `{s['command']}`."])


def fine_sampling_table() -> str:
    """docs/results/fine_sampling.json (+ recordings/): the fine stages' sampling settings (issues 19 and 21)."""
    lines = ["| corpus | setting | fine stages' temperature | tier prior sigma | band error, dB (MIDI / genre) "
             "| 1-2 / 2-4 / 4-8 kHz, genre pieces | noisy windows (MIDI / genre) | genre pieces with <= 5% noisy "
             "(first window noisy) | opening, genre pieces: 0-50 / 50-150 / 150-300 ms (dB re 0.5-1.5 s) "
             "| pieces with every tier SNR >= 20 dB | note F1 (rendering) | genre recognised |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for corpus, r in present((("demo", HERE / "fine_sampling.json"),
                              ("recordings", HERE / "recordings" / "fine_sampling.json"),
                              ("demo, fine stages trained 3000 steps", HERE / "fine_sampling_steps.json"),
                              ("demo, `make demo`'s run (wW: score guidance W, gG: the stages' guidance G, s0: "
                               "stage 0 alone)", HERE / "fine_sampling_guidance.json"),
                              ("four genres, its run (the same settings)",
                               HERE / "four_genres" / "fine_sampling_guidance.json"),
                              ("demo, `make demo`'s run (wWnG: the stages' twin drops the genre alone, guidance G; "
                               "f: the fine stages alone)", HERE / "fine_sampling_genre_twin.json"),
                              ("four genres, its run (the genre twin)",
                               HERE / "four_genres" / "fine_sampling_genre_twin.json"),
                              ("demo, `make demo`'s run with fine stages of constant scale (no adaptive scale)",
                               HERE / "fine_sampling_constant_scale.json"),
                              ("demo, `make demo`'s run, steady scale", HERE / "fine_sampling_steady_scale.json"),
                              ("demo, `make demo`'s run (pP: a warm-up of P s before the piece)",
                               HERE / "fine_sampling_preroll.json"),
                              ("four genres, its run (the warm-up)",
                               HERE / "four_genres" / "fine_sampling_preroll.json"),
                              ("demo, stage 1 with score taps from 1 kHz (s01: their full share in stage 1; t04: stage "
                               "1 at temperature 0.4)", HERE / "fine_sampling_high_band_taps.json"),
                              ("demo, the same and stage 2 with the roll and taps from 4 kHz",
                               HERE / "fine_sampling_high_band_taps_stage2.json"),
                              ("four genres, stage 1 with score taps from 1 kHz (s1: their full share in stage 1)",
                               HERE / "four_genres" / "fine_sampling_high_band_taps.json"),
                              ("demo, stage 1 with score taps from 1 kHz at temperature 0.4 (sS: their share S in "
                               "stage 1)", HERE / "fine_sampling_high_band_share.json"),
                              ("four genres, the same shares",
                               HERE / "four_genres" / "fine_sampling_high_band_share.json")),
                             notes):
        run = r["run_sampling"]
        for name, s in r["settings"].items():
            m, g, acc = s["summary"]["midi"], s["summary"]["genre"], s["summary"]["genre_recognised"]
            temps = s["stage_temperature"] or run["stage_temperature"]
            prior = run["tier_prior"] if s["tier_prior"] is None else s["tier_prior"]
            bands = _bands(g)
            both = [x for x in (m, g) if x]
            f1 = f"{m['note_f1_mean']:.2f} ({m['rendering_note_f1_mean']:.2f})" if m and m.get("note_f1_mean") else "-"
            lines.append(f"| {corpus} | {name} | {', '.join(f'{t:g}' for t in temps[1:])} | {prior:g} "
                         f"| {_f(m and m['band_error_db_mean'], '.1f')} / {g['band_error_db_mean']:.1f} | {bands} "
                         f"| {_f(m and m['noisy_share_mean'], '.0%')} / {g['noisy_share_mean']:.0%} "
                         f"| {g['pieces_95pct_windows_clean']} of {g['pieces']} ({g['pieces_first_window_noisy']}) "
                         f"| {' / '.join(f'{v:.1f}' for v in g['opening_db_median'])} "
                         f"| {sum(x['pieces_all_tiers_snr_20db'] for x in both)} of {sum(x['pieces'] for x in both)} "
                         f"| {f1} | {acc['accuracy']:.2f} of {acc['clips']} clips{_heard_notes(acc)} |")
        ref = " ".join(f"{k} {' / '.join(f'{v:.1f}' for v in x['bands'].values())};"
                       for k, x in r["references"]["genres"].items())
        opening = " / ".join(f"{v:.1f}" for v in r["references"]["opening_db_median"])
        notes.append(f"{corpus}: run `{r['argv'][3]}`, 8 s pieces, real test audio's bands {ref} its opening "
                     f"{opening} dB (median of the test tracks); the classifier "
                     f"recognises {r['genre_classifier']['real_test']['accuracy']:.2f} of real test clips "
                     f"(chance {1 / len(r['genre_classifier']['genres']):.2f}). Commit `{r['commit'][:10]}`, "
                     f"`{r['command']}`.")
    return "\n".join(lines + [""] + notes)


def fine_levers_table() -> str:
    """docs/results/fine_sampling_levers*.json (+ four_genres/): the fine stages' scale and share levers, with the
    1-4 kHz band's own noise test (issue 21; issue 19's genre in the sound)."""
    lines = ["| corpus, run | setting | fine stages' temperature | band error, dB (MIDI / genre) "
             "| 1-2 / 2-4 / 4-8 kHz, genre pieces | 1-2 kHz by genre | noisy windows, full band: genre (clean pieces) "
             "| noisy windows, 1-4 kHz: genre (clean pieces) | pieces with every tier SNR >= 20 dB "
             "| note F1 (rendering) | genre recognised |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for corpus, r in present((("demo, `make demo` at the presets of this session (`demo_sp`)",
                               HERE / "fine_sampling_presets.json"),
                              ("demo, the same run, 10 pieces per genre (seeds 1-10)",
                               HERE / "fine_sampling_presets_more.json"),
                              ("demo, the same run, stage 0 cooler (t09 / t08: stage 0 at temperature 0.9 / 0.8)",
                               HERE / "fine_sampling_stage0_temperature.json"),
                              ("demo, the same run, stage 0's score taps held harder (s0p03 / s0p003: the network's "
                               "share to the power 0.3 / 0.03; s0s1: their full share)",
                               HERE / "fine_sampling_stage0_share.json"),
                              ("demo, the same run, stage 0 cooler with its own scale steady (t09s0 / t08s0: stage 0 "
                               "at 0.9 / 0.8, its adaptive scale reading drawn residuals / temperature)",
                               HERE / "fine_sampling_stage0_steady.json"),
                              ("four genres, `other4/run_hb` (the presets' configuration), the same",
                               HERE / "four_genres" / "fine_sampling_stage0_steady.json"),
                              ("demo, the same run, stage 0's scale reading a drawn |residual| at most k times the "
                               "scale it was drawn with (c0k2 / c0k4: k = 2 / 4)",
                               HERE / "fine_sampling_stage0_clip.json"),
                              ("four genres, `other4/run_hb`, the same",
                               HERE / "four_genres" / "fine_sampling_stage0_clip.json"),
                              ("demo, `make demo` at the 20-minute presets (`demo3/run`), stage 0's nucleus narrowed "
                               "(s0p09 / s0p08: stage 0 at top-p 0.9 / 0.8, the others at the presets' 0.99; 20 "
                               "pieces per genre)", HERE / "fine_sampling_stage0_top_p.json"),
                              ("demo, `demo3/run`'s stage 0 trained again for its 562 steps (`demo3/run_bw0`: the "
                               "control)", HERE / "fine_sampling_line_width_bw0.json"),
                              ("demo, the same with its score taps' line width learned per genre (`demo3/run_bw1`: "
                               "`score.learned_bandwidth`)", HERE / "fine_sampling_line_width_bw1.json"),
                              ("demo, the same with a finer envelope per genre (`demo3/run_k32`: stage 0's "
                               "`score.timbre_knots` 32, the presets' 8; s0p09: its nucleus at 0.9)",
                               HERE / "fine_sampling_knots32.json"),
                              ("other soundfont: a fresh `make demo` with its corpus rendered with TimGM6mb "
                               "(`demo4`: `STRATA_SOUNDFONT`), the presets; 10 pieces per genre",
                               HERE / "fine_sampling_demo_other_soundfont.json"),
                              ("other soundfont, the same run, stage 0 at top-p 0.9 (s0p09)",
                               HERE / "fine_sampling_stage0_top_p_other_soundfont.json"),
                              ("demo, the same run, stage 2 warmer (t2s08 / t2s1: stage 2 at 0.8 / 1)",
                               HERE / "fine_sampling_stage2_temperature.json"),
                              ("four genres, `other4/run_hb`, the same",
                               HERE / "four_genres" / "fine_sampling_stage2_temperature.json"),
                              ("demo, stage 0 trained again with 128 own-past and score taps (`demo_sp/run_lo128`: "
                               "linear_order 128, the presets' 32; the same 919 steps)",
                               HERE / "fine_sampling_stage0_order128.json"),
                              ("demo, stage 2 trained again with the roll and score taps from 4 kHz "
                               "(`demo_sp/run_hb2`; s2p003 / s2p01: their network share to the power 0.03 / 0.1)",
                               HERE / "fine_sampling_stage2_taps.json"),
                              ("four genres, the same (`other4/run_hb2`; p003t04: the presets' sampling)",
                               HERE / "four_genres" / "fine_sampling_stage2_taps.json"),
                              ("demo, the same (`demo_sp/run_hb2`), stage 2's share to the power 0.1 with its scale "
                               "clipped (s2p01c2 / s2p01c3: k = 2 / 3)",
                               HERE / "fine_sampling_stage2_taps_clip.json"),
                              ("demo, the same (`demo_sp/run_hb2`), stage 2's share to the power 0.3, and 0.1 at "
                               "temperature 0.4 (s2p03 / s2p01t4)", HERE / "fine_sampling_stage2_taps_more.json"),
                              ("demo, a fresh `make demo`'s run with stage 2 trained again with the roll and score "
                               "taps from 4 kHz (`demo/run_s2t`, 400 steps; s2p01: their share to the power 0.1)",
                               HERE / "fine_sampling_stage2_taps_fresh.json"),
                              ("demo, the same with stage 2's taps cross-faded over 5 ms where the notes change "
                               "(`demo/run_s2xf`)", HERE / "fine_sampling_stage2_taps_crossfade.json"),
                              ("demo, stages 0 and 1 trained again with a learned timbre per genre on their score "
                               "taps (`demo_sp/run_tb`: `score.timbre_knots` 8 / 16; the same 919 / 469 steps)",
                               HERE / "fine_sampling_timbre.json"),
                              ("four genres, the same (`other4/run_tb`; 750 / 425 steps; p003t04: the presets' "
                               "sampling)", HERE / "four_genres" / "fine_sampling_timbre.json"),
                              ("demo, `make demo`'s run", HERE / "fine_sampling_levers.json"),
                              ("four genres, its run", HERE / "four_genres" / "fine_sampling_levers.json"),
                              ("demo, stage 1 with taps from 1 kHz (`demo/run_hb`)",
                               HERE / "fine_sampling_levers_hb.json"),
                              ("four genres, stage 1 with taps from 1 kHz (`other4/run_hb`)",
                               HERE / "four_genres" / "fine_sampling_levers_hb.json")), notes):
        run = r["run_sampling"]
        for name, s in r["settings"].items():
            m, g, acc = s["summary"]["midi"], s["summary"]["genre"], s["summary"]["genre_recognised"]
            temps = s["stage_temperature"] or run["stage_temperature"]
            by_genre: dict[str, list[float]] = {}
            for p in s["pieces"]:
                if p["name"].startswith("genre-") and "1-2k" in p["bands_db"]:
                    by_genre.setdefault(p["genre"], []).append(p["bands_db"]["1-2k"])
            genres = ", ".join(f"{k} {sum(v) / len(v):.1f}" for k, v in by_genre.items())
            f1 = f"{m['note_f1_mean']:.2f} ({m['rendering_note_f1_mean']:.2f})" if m.get("note_f1_mean") else "-"
            lines.append(f"| {corpus} | {name} | {', '.join(f'{t:g}' for t in temps[1:])} "
                         f"| {m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f} "
                         f"| {' / '.join(f'{v:.1f}' for v in g['bands_db_median'].values())} | {genres} "
                         f"| {g['noisy_share_mean']:.0%} ({g['pieces_95pct_windows_clean']} of {g['pieces']}) "
                         f"| {g['high_band_noisy_share_mean']:.0%} ({g['pieces_95pct_high_band_clean']} of "
                         f"{g['pieces']}) "
                         f"| {m['pieces_all_tiers_snr_20db'] + g['pieces_all_tiers_snr_20db']} of "
                         f"{m['pieces'] + g['pieces']} | {f1} | {acc['accuracy']:.2f} of {acc['clips']} clips |")
        hb = r["references"]["high_band_flatness"]
        per = r["argv"][r["argv"].index("--per-genre") + 1] if "--per-genre" in r["argv"] else "5"
        notes.append(f"{corpus}: 8 s pieces, {per} per genre and 4 MIDI pieces; 1-4 kHz noise threshold "
                     f"{hb['threshold']:.4f} (the {hb['percentile']:g}th percentile of {hb['windows']} real test "
                     f"windows, median {hb['median']:.4f}). Commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes)


def stage0_steps_table() -> str:
    """Stage 0 trained to its configured steps against the budget's (issue 19: does the sound follow the bits?):
    training_*.json, noise_trap_stage0_steps*.json (held out), fine_sampling_*.json (the pieces)."""
    lines = ["| run | stage 0 steps (best validation) | stage 0 held out: demo (below linear) | other soundfont (below "
             "linear) | genre recognised | noisy windows, genre (clean pieces) | pieces with every tier SNR >= 20 dB "
             "| band error, dB (MIDI / genre) | note F1 (rendering) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    rows = (("run", "`make demo` at the presets (`demo_sp/run`; its wall-clock budget)", "training_presets.json",
             "fine_sampling_presets.json"),
            ("run_s0", "the same, stage 0 trained again to its configured max_steps (`demo_sp/run_s0`)",
             "training_stage0_steps.json", "fine_sampling_stage0_steps.json"))
    files = [("held out", HERE / "noise_trap_stage0_steps.json"),
             ("held out, other soundfont", HERE / "noise_trap_stage0_steps_other_soundfont.json")]
    held = dict(present(files, notes))
    for key, label, train_file, pieces_file in rows:
        got = dict(present(((f"training {key}", HERE / train_file), (f"pieces {key}", HERE / pieces_file)), notes))
        if len(got) < 2:
            continue
        tr, fs = got[f"training {key}"]["stages"]["0"], got[f"pieces {key}"]["settings"]["run"]["summary"]
        bits = [(held[name]["runs"][key]["held_out"]["0"] if name in held and key in held[name]["runs"] else None)
                for name, _ in files]  # a column per file, "-" where it is missing
        m, g, acc = fs["midi"], fs["genre"], fs["genre_recognised"]
        f1 = f"{m['note_f1_mean']:.2f} ({m['rendering_note_f1_mean']:.2f})" if m.get("note_f1_mean") else "-"
        lines.append(f"| {label} | {tr['steps']} ({tr['best_valid_bits']:.3f}) | "
                     + " | ".join(f"{b['bits_per_sample']:.3f} ({b['below_linear']:+.3f})" if b else "-" for b in bits)
                     + f" | {acc['accuracy']:.2f} of {acc['clips']} clips | {g['noisy_share_mean']:.0%} "
                     f"({g['pieces_95pct_windows_clean']} of {g['pieces']}) | "
                     f"{m['pieces_all_tiers_snr_20db'] + g['pieces_all_tiers_snr_20db']} of "
                     f"{m['pieces'] + g['pieces']} "
                     f"| {m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f} | {f1} |")
        notes.append(f"{label}: commit `{got[f'training {key}']['commit'][:10]}`, "
                     f"`{got[f'training {key}']['command']}`; pieces: commit `{got[f'pieces {key}']['commit'][:10]}`, "
                     f"`{got[f'pieces {key}']['command']}`.")
    for name, h in held.items():
        notes.append(f"{name}: the test split's first {h['max_seconds']:g} s of each track; commit "
                     f"`{h['commit'][:10]}`, `{h['command']}`.")
    return "\n".join(lines + [""] + notes)


def silence_trap_table() -> str:
    """Stage 0 trained with and without its note floor (``score.scale_floor``; issue 19's silence trap) and entry
    crops (``entry_share``): training JSONs and fine_sampling_*.json (pieces; ``coarse_silent_share``: stage 0
    silent through the score's notes)."""
    lines = ["| corpus | stage 0 | steps (best validation) | genre pieces with stage 0 silent through notes (their "
             "silent share) | MIDI pieces the same | pieces within 10 dB of real | pieces with >= 95% clean windows "
             "| every tier SNR >= 20 dB | genre recognised (by notes) | clips heard as asked: chorale / classical / "
             "folk / renaissance |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    rows = (("demo", "the presets (`demo3/run`, `make demo`)", "training_demo_tier_share.json",
             "fine_sampling_floor0.json", "run"),
            ("demo", "the same, a note floor 0.01 at sampling only (`--scale-floor 0.01`)",
             "training_demo_tier_share.json", "fine_sampling_sampling_floor.json", "sf01"),
            ("demo", "trained again with a note floor 0.01 (`demo3/run_nf1`)", "training_scale_floor.json",
             "fine_sampling_scale_floor.json", "run"),
            ("demo", "trained again with a note floor 0.003 (`demo3/run_nf3`)", "training_scale_floor3.json",
             "fine_sampling_scale_floor3.json", "run"),
            ("demo", "trained again with the floor 0.01 and entry crops 0.25 (`demo3/run_en`)", "training_entry.json",
             "fine_sampling_entry.json", "run"),
            ("other soundfont", "the presets (`demo4/run`, `make demo` on TimGM6mb)",
             "training_demo_other_soundfont.json", "fine_sampling_floor0_other_soundfont.json", "run"),
            ("other soundfont", "the same, a note floor 0.01 at sampling only", "training_demo_other_soundfont.json",
             "fine_sampling_sampling_floor_other_soundfont.json", "sf01"),
            ("other soundfont", "trained again with a note floor 0.01 (`demo4/run_nf1`)",
             "training_scale_floor_other_soundfont.json", "fine_sampling_scale_floor_other_soundfont.json", "run"),
            ("other soundfont", "trained again with a note floor 0.003 (`demo4/run_nf3`)",
             "training_scale_floor3_other_soundfont.json", "fine_sampling_scale_floor3_other_soundfont.json", "run"),
            ("other soundfont", "the floor 0.01 again, seed 1 (`demo4/run_nf1s1`)",
             "training_scale_floor_seed1_other_soundfont.json",
             "fine_sampling_scale_floor_seed1_other_soundfont.json", "run"),
            ("other soundfont", "trained again with the floor 0.01 and entry crops 0.25 (`demo4/run_en`)",
             "training_entry_other_soundfont.json", "fine_sampling_entry_other_soundfont.json", "run"),
            ("other soundfont", "the same, seed 1 (`demo4/run_ens1`)", "training_entry_seed1_other_soundfont.json",
             "fine_sampling_entry_seed1_other_soundfont.json", "run"),
            ("other soundfont", "the floor 0.01 and entry crops 0.5 (`demo4/run_en5`; not adopted)",
             "training_entry5_other_soundfont.json", "fine_sampling_entry5_other_soundfont.json", "run"),
            ("other soundfont", "the same, seed 1 (`demo4/run_en5s1`)", "training_entry5_seed1_other_soundfont.json",
             "fine_sampling_entry5_seed1_other_soundfont.json", "run"),
            ("other soundfont", "the floor 0.01, twice the steps (`demo4/run_nf1_2x`)",
             "training_scale_floor_2x_other_soundfont.json",
             "fine_sampling_scale_floor_2x_other_soundfont.json", "run"),
            ("other soundfont", "the floor and entry crops 0.25, twice the steps (`demo4/run_en_2x`)",
             "training_entry_2x_other_soundfont.json", "fine_sampling_entry_2x_other_soundfont.json", "run"))
    for corpus, label, train_file, pieces_file, setting in rows:
        got = dict(present((("training", HERE / train_file), ("pieces", HERE / pieces_file)), notes))
        if len(got) < 2:
            continue
        tr, fs = got["training"]["stages"]["0"], got["pieces"]["settings"][setting]["summary"]
        m, g, acc = fs["midi"], fs["genre"], fs["genre_recognised"]
        genres = got["pieces"]["genre_classifier"]["genres"]
        heard = [sum(p == t == i for p, t in zip(acc["per_clip"], acc["truth"])) for i in range(len(genres))]
        asked = [acc["truth"].count(i) for i in range(len(genres))]
        both = m["pieces"] + g["pieces"]

        def count(key: str) -> str:
            return f"{m[key] + g[key]} of {both}"

        lines.append(f"| {corpus} | {label} | {tr['steps']} ({tr['best_valid_bits']:.3f}) "
                     f"| {g['pieces_coarse_silent']} of {g['pieces']} ({g['coarse_silent_share_mean']:.0%}) "
                     f"| {m['pieces_coarse_silent']} of {m['pieces']} | {count('pieces_level_within_10db')} "
                     f"| {count('pieces_95pct_windows_clean')} | {count('pieces_all_tiers_snr_20db')} "
                     f"| {acc['accuracy']:.2f} ({acc['by_notes']['accuracy']:.2f}) of {acc['clips']} clips "
                     f"| {' / '.join(f'{h} of {n}' for h, n in zip(heard, asked))} |")
        for key in ("training", "pieces"):
            notes.append(f"{label}, {key}: commit `{got[key]['commit'][:10]}`, `{got[key]['command']}`.")
    return "\n".join(lines + [""] + notes)


def silence_high_table() -> str:
    """bench/silence.py on one high folk score (``silence_folk_high.mid``, a score the other soundfont's score tier
    wrote) with and without its genre, stage 0 alone, 10 draws per stage 0 (silence_folk_high_*.json)."""
    lines = ["| stage 0 | genre asked | draws | silent through half its sounding seconds or more "
             "| with a silent second | median level where notes sound (dBFS, median over draws) |",
             "| --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    rows = (("the note floor 0.01 (`demo4/run_nf1`)", "run_nf1_nogenre"),
            ("the note floor 0.01 (`demo4/run_nf1`)", "run_nf1"),
            ("the floor, seed 1 (`demo4/run_nf1s1`)", "run_nf1s1"),
            ("the floor and entry crops 0.25 (`demo4/run_en`)", "run_en"),
            ("the same, seed 1 (`demo4/run_ens1`)", "run_ens1"),
            ("the floor and entry crops 0.5 (`demo4/run_en5`)", "run_en5"),
            ("the same, seed 1 (`demo4/run_en5s1`)", "run_en5s1"),
            ("the note floor, twice the steps (1140, `demo4/run_nf1_2x`)", "run_nf1_2x"),
            ("the floor and entry crops 0.25, twice the steps (`demo4/run_en_2x`)", "run_en_2x"))
    for label, key in rows:
        got = dict(present(((key, HERE / f"silence_folk_high_{key}.json"),), notes))
        if not got:
            continue
        d = got[key]
        silent = [r["silent_notes"] for r in d["rows"]]
        level = sorted(r["stage0_median_dbfs_notes"] for r in d["rows"])
        lines.append(f"| {label} | {d.get('genre') or 'none'} | {len(silent)} | {sum(v >= 0.5 for v in silent)} "
                     f"| {sum(v > 0 for v in silent)} | {level[len(level) // 2]:.1f} |")
        notes.append(f"{label}, genre {d.get('genre') or 'none'}: commit `{d['commit'][:10]}`, `{d['command']}`.")
    return "\n".join(lines + [""] + notes)


def timbre_table() -> str:
    """Stages 0 and 1 with a learned timbre per genre on their score taps (``score.timbre_knots``) against the
    presets' fixed 1/h taps and one envelope shared by every genre: validation (training_*.json), held out
    (noise_trap_timbre*.json) and the pieces (fine_sampling_*.json), demo and four genres."""
    held_files = [("held out", HERE / "noise_trap_timbre.json"),
                  ("held out, other soundfont", HERE / "noise_trap_timbre_other_soundfont.json")]
    # (corpus, key in the held-out JSONs, label, [(stage, training JSON)], pieces JSON, setting, 80-clip JSON)
    rows = (("demo", "run", "the presets: fixed 1/h (`demo_sp/run`)", [("0", "training_presets.json"),
             ("1", "training_presets.json")], "fine_sampling_presets.json", "run", "fine_sampling_presets_more.json"),
            ("demo", "run_tb", "a timbre per genre (`demo_sp/run_tb`)", [("0", "training_timbre.json"),
             ("1", "training_timbre.json")], "fine_sampling_timbre.json", "run", "fine_sampling_timbre_more.json"),
            ("demo", "run_ts", "one envelope for every genre (`demo_sp/run_ts`)",
             [("0", "training_timbre_shared.json"), ("1", "training_timbre_shared.json")],
             "fine_sampling_timbre_shared.json", "run", None),
            ("demo", None, "a fresh `make demo` at the new presets (`demo_tb/run`; its wall-clock budget)",
             [("0", "training_presets_timbre.json"), ("1", "training_presets_timbre.json")],
             "fine_sampling_presets_timbre.json", "run", "fine_sampling_presets_timbre_more.json"),
            ("four genres", None, "the presets (`other4/run_hb`: stage 0 is `other4/run`'s, stage 1 read in "
             "`other4/run_hb2`, its copy)",
             [("0", "four_genres/training.json"), ("1", "four_genres/training_stage2_taps.json")],
             "four_genres/fine_sampling_stage2_temperature.json", "p003t04",
             "four_genres/fine_sampling_presets_more.json"),
            ("four genres", None, "a timbre per genre (`other4/run_tb`)",
             [("0", "four_genres/training_timbre.json"), ("1", "four_genres/training_timbre.json")],
             "four_genres/fine_sampling_timbre.json", "p003t04", "four_genres/fine_sampling_timbre_more.json"))
    return stage_runs_table(rows, held_files)


def crossfade_table() -> str:
    """Stages 0 and 1 trained again with their score taps cross-faded where the notes change
    (``score.crossfade_ms``) against the same retraining without, in a fresh ``make demo``'s run: validation,
    held out (noise_trap_crossfade*.json) and the pieces."""
    held_files = [("held out", HERE / "noise_trap_crossfade.json"),
                  ("held out, other soundfont", HERE / "noise_trap_crossfade_other_soundfont.json")]
    rows = (("demo", None, "a fresh `make demo` at the presets (`demo/run`; its wall-clock budget)",
             [("0", "training_demo_fresh.json"), ("1", "training_demo_fresh.json")],
             "fine_sampling_demo_fresh.json", "run", None),
            ("demo", "run_c", "stages 0 and 1 trained again, the same steps (`demo/run_c`: the control)",
             [("0", "training_crossfade_control.json"), ("1", "training_crossfade_control.json")],
             "fine_sampling_crossfade_control.json", "run", None),
            ("demo", "run_xf", "the same with the taps cross-faded over 5 ms (`demo/run_xf`)",
             [("0", "training_crossfade.json"), ("1", "training_crossfade.json")],
             "fine_sampling_crossfade.json", "run", None))
    return stage_runs_table(rows, held_files)


SCHEDULE_ROWS = (  # (stage, label, training JSON, pieces JSON or None, noise_trap key or None)
    ("1", "a fresh `make demo` (`demo/run`): cosine fitted to its budget", "training_demo_fresh.json",
     None, None),
    ("1", "trained again on a cosine of 310 steps (`demo/run_sch310`)", "training_schedule_sch310.json",
     "fine_sampling_schedule_sch310.json", "run_sch310"),
    ("1", "the same, 620 steps (`demo/run_sch620`)", "training_schedule_sch620.json",
     "fine_sampling_schedule_sch620.json", None),
    ("1", "the same, the configured 1000 steps (`demo/run_c1`)", "training_schedule_c1.json",
     "fine_sampling_schedule_c1.json", "run_c1"),
    ("0", "a fresh `make demo` (`demo/run`): cosine fitted to its budget", "training_demo_fresh.json", None, None),
    ("0", "trained again, cosine fitted to `--max-minutes 60` (`demo/run_c`)", "training_crossfade_control.json",
     None, None),
    ("0", "trained again on the configured 2400 steps (`demo/run_sch0_2400`)", "training_schedule_sch0_2400.json",
     None, None),
    ("score", "a fresh `make demo` (`demo/run`): cosine fitted to its budget", "training_demo_fresh.json", None,
     None),
    ("score", "trained again on a cosine of 951 steps (`demo/run_sct951`)", "training_schedule_sct951.json", None,
     None),
    ("score", "trained again on the configured 3000 steps (`demo/run_sct3000`)", "training_schedule_sct3000.json",
     None, None),
    ("1", "a fresh `make demo` at the new default (`demo2/run`; a slower machine: fewer steps)",
     "training_demo_schedule.json", "fine_sampling_demo_schedule.json", None),
    ("0", "the same", "training_demo_schedule.json", None, None),
    ("score", "the same", "training_demo_schedule.json", None, None),
)


def held_bits(noise_trap: dict | None, key: str | None, stages) -> str:
    """A noise_trap JSON's held-out bits of run ``key`` for ``stages`` ("0", "1", ..), each with its margin
    below the linear baseline: "5.897 (+0.887) / 4.951 (+0.315)"; "-" without them."""
    r = noise_trap.get("runs", {}).get(key) if noise_trap and key else None
    if not r:
        return "-"
    return " / ".join(f"{r['held_out'][k]['bits_per_sample']:.3f} ({r['held_out'][k]['below_linear']:+.3f})"
                      for k in stages)


def schedule_table() -> str:
    """One stage trained again for the steps a fresh ``make demo``'s budget gave it, on cosines of other lengths:
    the schedule (training JSONs' ``schedule``), validation, held out (noise_trap_schedule*.json) and the pieces."""
    lines = ["| stage | run | cosine over (fitted to the budget) | learning rate at the stop (of the peak) | steps "
             "| validation | held out: demo (below linear) | held out: other soundfont | genre recognised "
             "| noisy windows, genre (clean pieces) | band error, dB (MIDI / genre) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    held = dict(present((("demo", HERE / "noise_trap_schedule.json"),
                         ("other soundfont", HERE / "noise_trap_schedule_other_soundfont.json")), notes))
    for stage, label, train, pieces, key in SCHEDULE_ROWS:
        files = [("training", HERE / train)] + ([("pieces", HERE / pieces)] if pieces else [])
        got = dict(present(files, notes))
        if "training" not in got or (pieces and "pieces" not in got):
            continue
        r = got["training"]["stages"].get(stage)
        if r is None or "schedule" not in r:
            notes.append(f"{train}: no schedule for stage {stage} (written before bench/training_summary.py kept it)")
            continue
        sch = r["schedule"]
        unit = "bits per event" if stage == "score" else ""
        cells = [f"{'score tier' if stage == 'score' else stage}", label,
                 f"{sch['cosine_steps']} ({'yes' if sch['fitted_to_budget'] else 'no'})",
                 f"{sch['last_lr_share']:.2f} (step {sch['last_lr_step']})", str(r["steps"]),
                 f"{r['best_valid_bits']:.3f}{' ' + unit if unit else ''}"]
        cells += [held_bits(held.get(name), key, (stage,)) for name in ("demo", "other soundfont")]
        if pieces:
            fs = got["pieces"]["settings"]["run"]["summary"]
            m, g, acc = fs["midi"], fs["genre"], fs["genre_recognised"]
            cells += [f"{acc['accuracy']:.2f} of {acc['clips']} clips",
                      f"{g['noisy_share_mean']:.0%} ({g['pieces_95pct_windows_clean']} of {g['pieces']})",
                      f"{m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f}"]
        else:
            cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
        for name, _ in files:
            notes.append(f"{label}, {name}: commit `{got[name]['commit'][:10]}`, `{got[name]['command']}`.")
    for name, h in held.items():
        notes.append(f"held out, {name}: the test split's first {h['max_seconds']:g} s of each track; commit "
                     f"`{h['commit'][:10]}`, `{h['command']}`.")
    return "\n".join(lines + [""] + list(dict.fromkeys(notes)))


TIER_STEPS_ROWS = (  # (label, training JSON, pieces JSON): the score tier's steps, the stages shared but the last
    ("a fresh `make demo`, 16-minute budget (`demo2/run`)", "training_demo_schedule.json",
     "fine_sampling_tier_steps_demo.json"),
    ("its score tier trained again to its 3000 steps (`demo2/run_st3k`; stages 0-2 the same)",
     "training_tier_steps_3000.json", "fine_sampling_tier_steps_3000.json"),
    ("a fresh `make demo` at the 20-minute presets (`demo3/run`: every stage trained again)",
     "training_demo_tier_share.json", "fine_sampling_demo_tier_share.json"),
    ("the same run, 40 pieces per genre (seeds 1-40)", "training_demo_tier_share.json",
     "fine_sampling_demo_tier_share_40.json"),
)


def _clip_genres(acc: dict, genres: list[str]) -> list[int]:
    """The asked genre of each clip of a fine-sampling ``genre_recognised`` (clips in genre order, equal counts)."""
    n = max(1, len(acc["per_clip"]) // max(1, len(genres)))
    return [i // n for i in range(len(acc["per_clip"]))]


def _recognised_only(a: dict, b: dict, genres: list[str]) -> tuple[int, int]:
    """Two fine-sampling ``genre_recognised`` over the same clips: (clips recognised only in ``a``, only in ``b``)."""
    truth = _clip_genres(a, genres)
    only_a = sum(x == t != y for x, y, t in zip(a["per_clip"], b["per_clip"], truth))
    only_b = sum(y == t != x for x, y, t in zip(a["per_clip"], b["per_clip"], truth))
    return only_a, only_b


def _genre_cells(acc: dict, genres: list[str]) -> str:
    """Per genre: the share of a genre's clips the classifier recognised."""
    truth = _clip_genres(acc, genres)
    return " / ".join(f"{sum(p == t for p, t in zip(acc['per_clip'], truth) if t == g) / max(1, truth.count(g)):.2f}"
                      for g in range(len(genres)))


def tier_steps_table() -> str:
    """The score tier's steps against the sound (issue 19): training_*.json (steps, validation, the learning rate
    at the stop) and fine_sampling_*.json (the same seeds' pieces), rows ``TIER_STEPS_ROWS``."""
    lines = ["| run | score tier steps (lr at the stop, of the peak) | validation, bits per event | genre recognised "
             "(clips) | per genre | by the notes basic-pitch hears | noisy windows, genre (clean pieces) | pieces with "
             "every tier SNR >= 20 dB | band error, dB (MIDI / genre) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    recognised = []
    for label, train, pieces in TIER_STEPS_ROWS:
        got = dict(present((("training", HERE / train), ("pieces", HERE / pieces)), notes))
        if len(got) < 2:
            continue
        r, fs = got["training"]["stages"]["score"], got["pieces"]
        sm = fs["settings"]["run"]["summary"]
        m, g, acc = sm["midi"], sm["genre"], sm["genre_recognised"]
        genres = fs["genre_classifier"]["genres"]
        sch = r.get("schedule") or {}
        lr = f" ({sch['last_lr_share']:.2f})" if sch else ""
        lines.append(f"| {label} | {r['steps']}{lr} | {r['best_valid_bits']:.3f} | {acc['accuracy']:.2f} "
                     f"({acc['clips']}) | {_genre_cells(acc, genres)} | {acc['by_notes']['accuracy']:.2f} | "
                     f"{g['noisy_share_mean']:.0%} ({g['pieces_95pct_windows_clean']} of {g['pieces']}) | "
                     f"{m['pieces_all_tiers_snr_20db'] + g['pieces_all_tiers_snr_20db']} of {m['pieces'] + g['pieces']}"
                     f" | {m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f} |")
        recognised.append((label, acc, genres))
        for name in ("training", "pieces"):
            notes.append(f"{label}, {name}: commit `{got[name]['commit'][:10]}`, `{got[name]['command']}`.")
    if len(recognised) >= 2 and recognised[0][1]["clips"] == recognised[1][1]["clips"]:
        (_, a, genres), (_, b, _) = recognised[:2]
        only_a, only_b = _recognised_only(a, b, genres)
        notes.append(f"The first two rows, clip by clip (the same stages, seeds and clips): {only_a} recognised only "
                     f"with the shorter-trained tier, {only_b} only with the longer; genres {', '.join(genres)}.")
    return "\n".join(lines + [""] + list(dict.fromkeys(notes)))


TIER_STEPS_SCORES = (("a fresh `make demo`, 16-minute budget (`demo2/run`)", "score_tier_demo_16min.json"),
                     ("a fresh `make demo` at the 20-minute presets (`demo3/run`)", "score_tier_demo_tier_share.json"),
                     ("a fresh `make demo` with the key input (commit `265d418`, a new `demo3/run`)",
                      "score_tier_fresh.json"),
                     ("the same code's `make demo` on the other soundfont (`demo4/run`: the same scores, a tier of its "
                      "own)", "score_tier_fresh_other_soundfont.json"))


def tier_steps_scores_table() -> str:
    """The scores the two ``make demo`` tiers write (bench/score_tier.py, ``TIER_STEPS_SCORES``): held-out bits
    against the n-grams on both corpora, the genre in the notes, and per genre style and novelty beside the chain's."""
    lines = ["| run | step | held out: demo test split (fewer than the n-gram) | other corpus (fewer) | genre in the "
             "notes: tier / chain / real held-out | style overlap per genre: tier (chain) | unseen chord changes per "
             "genre | longest copied passage (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    for label, d in present(((label, HERE / f) for label, f in TIER_STEPS_SCORES), notes):
        t, o, gn = d["test"], d["other_corpus"], d["genre_by_notes"]
        genres = list(d["scores"])
        tier = {g: d["scores"][g]["tier"] for g in genres}
        chain = {g: d["scores"][g].get("chain") for g in genres}
        style = " / ".join(f"{tier[g]['style_overlap']['mean']:.2f} ({chain[g]['style_overlap']['mean']:.2f})"
                           if chain[g] and chain[g]["style_overlap"] else f"{tier[g]['style_overlap']['mean']:.2f}"
                           for g in genres)
        unseen = " / ".join(f"{tier[g]['novelty']['unseen_transitions']:.2f}" for g in genres)
        copied = max(tier[g]["novelty"]["longest_copied_passage_seconds"] for g in genres)
        other = (f"{o['bits_per_event']:.3f} ({o['fewer_bits_than_best_ngram']:.0%})" if o else "-")
        chain_notes = f"{gn['chain']['generated']:.2f}" if "chain" in gn else "-"
        held = f"{t['bits_per_event']:.3f} ({t['fewer_bits_than_best_ngram']:.0%})"
        in_notes = f"{gn['tier']['generated']:.2f} / {chain_notes} / {gn['tier']['real_heldout']:.2f}"
        lines.append(f"| {label} | {d['run_steps']} | {held} | {other} | {in_notes} | {style} | {unseen} | "
                     f"{copied:.1f} |")
        notes.append(f"{label}: genres {', '.join(genres)}; commit `{d['commit'][:10]}`, `{d['command']}`.")
    return "\n".join(lines + [""] + notes)


KEY_INPUT_RUNS = (("demo", "score tier as before (transposed +-5, not told)", "score_tier_key_control.json",
                   "fine_sampling_entry.json"),
                  ("demo", "told the transposition (key input)", "score_tier_key.json", "fine_sampling_key.json"),
                  ("other soundfont", "score tier as before (transposed +-5, not told)",
                   "score_tier_key_control_other_soundfont.json", "fine_sampling_key_control_other_soundfont.json"),
                  ("other soundfont", "told the transposition (key input)", "score_tier_key_other_soundfont.json",
                   "fine_sampling_key_other_soundfont.json"))


def key_input_table() -> str:
    """The score tier's key input (``KEY_INPUT_RUNS``: bench/score_tier.py and bench/fine_sampling.py JSONs): per
    corpus the tier trained as before and the same tier told each window's transposition, same steps and seed;
    stages 0-2 shared.  Held-out bits, pitch-class and mean style overlap per genre, novelty, and the genre heard in
    the rendered pieces."""
    lines = ["| corpus | score tier | step | held out: test split / other corpus (fewer than the n-gram) | pitch-class "
             "overlap per genre | style overlap per genre | unseen chord changes per genre | longest copied passage "
             "(s) | genre in the notes (tier) | genre heard in the audio (per genre) | by notes "
             "| silent genre pieces |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    heard_clips: dict[str, list] = {}  # corpus -> the genre_recognised of each fine-sampling JSON, in row order
    genres_of: dict[str, list[str]] = {}
    for corpus, label, tier_file, pieces_file in KEY_INPUT_RUNS:
        d = json.loads((HERE / tier_file).read_text()) if (HERE / tier_file).is_file() else None
        if d is None:
            notes.append(absent(HERE / tier_file))
            continue
        t, o = d["test"], d["other_corpus"]
        genres = list(d["scores"])
        tier = {g: d["scores"][g]["tier"] for g in genres}
        pc = " / ".join(_f(tier[g]["style_overlap"]["pitch_class"], ".2f") for g in genres)
        style = " / ".join(_f(tier[g]["style_overlap"]["mean"], ".2f") for g in genres)
        unseen = " / ".join(f"{tier[g]['novelty']['unseen_transitions']:.2f}" for g in genres)
        copied = max(tier[g]["novelty"]["longest_copied_passage_seconds"] for g in genres)
        held = (f"{t['bits_per_event']:.3f} / " + (f"{o['bits_per_event']:.3f}" if o else "-")
                + f" ({t['fewer_bits_than_best_ngram']:.0%} / " + (f"{o['fewer_bits_than_best_ngram']:.0%})" if o
                                                                    else "-)"))
        heard = by_notes = silent = "-"
        pieces_path = HERE / pieces_file
        if pieces_path.is_file():
            r = json.loads(pieces_path.read_text())
            summ = next(iter(r["settings"].values()))["summary"]
            acc = summ["genre_recognised"]
            heard_clips.setdefault(corpus, []).append(acc)
            genres_of[corpus] = genres
            heard = f"{acc['accuracy']:.2f} of {acc['clips']} ({_genre_cells(acc, genres)})"
            by_notes = f"{acc['by_notes']['accuracy']:.2f}" if acc.get("by_notes") else "-"
            silent = f"{summ['genre']['pieces_coarse_silent']} of {summ['genre']['pieces']}"
            notes.append(f"{corpus}, {label}, pieces: commit `{r['commit'][:10]}`, `{r['command']}`.")
        else:
            notes.append(absent(pieces_path))
        lines.append(f"| {corpus} | {label} | {d['run_steps']} | {held} | {pc} | {style} | {unseen} | {copied:.1f} | "
                     f"{d['genre_by_notes']['tier']['generated']:.2f} | {heard} | {by_notes} | {silent} |")
        notes.append(f"{corpus}, {label}: genres {', '.join(genres)}; commit `{d['commit'][:10]}`, `{d['command']}`.")
    for corpus, accs in heard_clips.items():  # the same stages, seeds and clips: only the score tier differs
        if len(accs) == 2 and accs[0]["clips"] == accs[1]["clips"]:
            only_a, only_b = _recognised_only(*accs, genres_of[corpus])
            notes.append(f"{corpus}, clip by clip: {only_a} recognised only with the tier as before, {only_b} only "
                         f"with the key input.")
    return "\n".join(lines + [""] + notes)


ADAPT_FLOOR_RUNS = (  # (corpus, label, bench/fine_sampling.py JSON[, its setting]): the same run and seeds, the
    # floor at sampling (a JSON of several settings names the one of the row; else its only one)
    ("demo", "a fresh `make demo` (`demo3/run`), as trained: 1e-3", "fine_sampling_fresh.json"),
    ("demo", "the same, stage 2's floor 1e-4 at sampling", "fine_sampling_adapt_floor.json"),
    ("demo", "the same, stage 1's floor 1e-4 and stage 2's 1e-5 (not adopted)",
     "fine_sampling_adapt_floor_more.json"),
    ("demo", "stage 2's floor 1e-4; a score whose music stops > 2 s early drawn again (adopted); 8 unconditional "
     "pieces too", "fine_sampling_tail_floor.json", "af2"),
    ("demo", "the same, every stage's floor 1e-4 after the score's last note (tail floor; not adopted)",
     "fine_sampling_tail_floor.json", "tl4"),
    ("demo", "the same, every stage's floor 1e-5 after the score's last note (tail floor; not adopted)",
     "fine_sampling_tail_floor.json", "tl5"),
    ("other soundfont", "a fresh `make demo` on TimGM6mb (`demo4/run`), as trained: 1e-3",
     "fine_sampling_fresh_other_soundfont.json"),
    ("other soundfont", "the same, stage 2's floor 1e-4 at sampling", "fine_sampling_adapt_floor_other_soundfont.json"),
    ("other soundfont", "stage 2's floor 1e-4; a score whose music stops > 2 s early drawn again (adopted); 8 "
     "unconditional pieces too", "fine_sampling_tail_floor_other_soundfont.json", "af2"),
    ("other soundfont", "the same, every stage's floor 1e-5 after the score's last note (tail floor; not adopted)",
     "fine_sampling_tail_floor_other_soundfont.json", "tl5"))


def adapt_floor_table() -> str:
    """``ADAPT_FLOOR_RUNS``: the genre pieces' noisy windows and the bands after their score's last note (the tail),
    with the adaptive scale's floor as trained and lowered at sampling (``generate.adapt_floor``, and after the
    score's last note alone: ``generate.tail_floor``), same stages and seeds; the bands, tier SNR, note F1 and genre
    heard, which it must not cost; unconditional pieces where the JSON has them."""
    lines = ["| corpus | the stages' floor | noisy 1 s windows, genre pieces (pieces with every window clean; "
             "with the last second noisy) "
             "| tail: 0-1 / 4-8 kHz, dBFS (pieces) | the same scores' plain rendering, its tail "
             "| 1-2 / 2-4 / 4-8 kHz re 0-1 kHz, genre pieces "
             "| band error, dB (MIDI / genre) | pieces with every tier SNR >= 20 dB | note F1 (rendering) "
             "| genre heard | unconditional pieces: every window clean (level within 10 dB of real audio) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    rows = (((c, lab, rest[0] if rest else None), HERE / n) for c, lab, n, *rest in ADAPT_FLOOR_RUNS)
    for (corpus, label, setting), r in present(rows, notes):
        s = (r["settings"][setting] if setting else next(iter(r["settings"].values())))["summary"]
        m, g, acc, u = s["midi"], s["genre"], s["genre_recognised"], s.get("unconditional")
        tail = g.get("tail_bands_db_median")
        tail_cell = f"{tail['0-1k']:.1f} / {tail['4-8k']:.1f} ({g['pieces_with_tail']})" if tail else "-"
        plain = g.get("rendering_tail_bands_db_median")
        plain_cell = f"{plain['0-1k']:.1f} / {plain['4-8k']:.1f}" if plain else "-"
        f1 = f"{m['note_f1_mean']:.2f} ({m['rendering_note_f1_mean']:.2f})" if m.get("note_f1_mean") else "-"
        snr = m["pieces_all_tiers_snr_20db"] + g["pieces_all_tiers_snr_20db"]
        last = f"; {g['pieces_last_window_noisy']}" if "pieces_last_window_noisy" in g else ""
        bands = _bands(g)
        uncond = (f"{u['pieces_95pct_windows_clean']} of {u['pieces']} ({u['pieces_level_within_10db']})"
                  if u else "-")
        lines.append(f"| {corpus} | {label} | {g['noisy_share_mean']:.1%} ({g['pieces_95pct_windows_clean']} of "
                     f"{g['pieces']}{last}) | {tail_cell} | {plain_cell} | {bands} "
                     f"| {m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f} "
                     f"| {snr} of {m['pieces'] + g['pieces']} "
                     f"| {f1} | {acc['accuracy']:.2f} of {acc['clips']} clips | {uncond} |")
        notes.append(f"{corpus}, {label}: commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes)


def fine_silence_table() -> str:
    """bench/fine_silence.py: each fine stage drawn over a tier below as quiet as a release's end, its floor as
    trained and lowered at sampling (demo and other soundfont)."""
    files = (("demo", HERE / "fine_silence.json"), ("other soundfont", HERE / "fine_silence_other_soundfont.json"))
    lines, notes = [], []
    for corpus, r in present(files, notes):
        for k, st in r["stages"].items():
            if not lines:
                lines = ["| corpus | stage | temperature, tier prior | tier below, dBFS | "
                         + " | ".join(f"floor {d['floor'] if isinstance(d['floor'], str) else format(d['floor'], 'g')}"
                                      ": dBFS (codes 5-95%)" for d in st["draws"]) + " |",
                         "| --- | --- | --- | --- |" + " --- |" * len(st["draws"])]
            lines.append(f"| {corpus} | {k} ({st['rate']} Hz) | {st['temperature']:g}, {st['tier_prior']:g} "
                         f"| {st['tier_below_db']:.1f} | " + " | ".join(
                             f"{d['level_db']:.1f} ({d['codes_p5_p95'][0]}-{d['codes_p5_p95'][1]})"
                             for d in st["draws"]) + " |")
        notes.append(f"{corpus}: commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes)


TRAINED_FLOOR_RUNS = (  # (label, training_summary JSON, fine_silence JSON, fine_sampling JSON): stage 1 trained
    # again from the fresh demo run's other stages, the same 471 steps, with the adaptive scale's floor 1e-3 / 1e-4
    ("stage 1 trained with the floor 1e-3 (control)", "training_stage1_floor_1e-3.json",
     "fine_silence_stage1_floor_1e-3.json", "fine_sampling_stage1_floor_1e-3.json"),
    ("stage 1 trained with the floor 1e-4", "training_stage1_floor_1e-4.json", "fine_silence_stage1_floor_1e-4.json",
     "fine_sampling_stage1_floor_1e-4.json"))


def trained_floor_table() -> str:
    """``TRAINED_FLOOR_RUNS``: a fine stage trained with a lower adaptive-scale floor (stage config ``adapt_floor``)
    against its control: validation bits, what it draws over silence (bench/fine_silence.py), and the genre and
    unconditional pieces' noisy windows, bands and genre heard (bench/fine_sampling.py)."""
    lines = ["| stage 1 | steps | best validation bits (step) | over a -78 dBFS tier below: as trained / 1e-4 at "
             "sampling, dBFS | genre pieces with every window clean (last second noisy) | unconditional pieces the "
             "same | 1-2 / 2-4 / 4-8 kHz re 0-1 kHz, genre pieces | genre heard |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    for label, train_name, silence_name, sampling_name in TRAINED_FLOOR_RUNS:
        paths = [HERE / n for n in (train_name, silence_name, sampling_name)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            notes += [absent(p) for p in missing]
            continue
        t, sil, fs = (json.loads(p.read_text()) for p in paths)
        st = t["stages"]["1"]
        draws = {str(d["floor"]): d["level_db"] for d in sil["stages"]["1"]["draws"]}
        summ = next(iter(fs["settings"].values()))["summary"]
        g, u = summ["genre"], summ.get("unconditional")
        bands = _bands(g)
        lines.append(f"| {label} | {st['steps']} | {st['best_valid_bits']:.3f} ({st['best_step']}) "
                     f"| {draws['as trained']:.1f} / {draws['0.0001']:.1f} "
                     f"| {g['pieces_95pct_windows_clean']} of {g['pieces']} ({g['pieces_last_window_noisy']}) "
                     f"| {u['pieces_95pct_windows_clean'] if u else '-'} of {u['pieces'] if u else '-'} | {bands} "
                     f"| {summ['genre_recognised']['accuracy']:.2f} of {summ['genre_recognised']['clips']} clips |")
        notes.append(f"{label}: `{t['command']}`, `{sil['command']}`, `{fs['command']}` (commits `{t['commit'][:10]}`, "
                     f"`{sil['commit'][:10]}`, `{fs['commit'][:10]}`).")
    return "\n".join(lines + [""] + notes)


STAGE2_TAPS_RUNS = (  # (corpus, label, training_summary JSON, bench/fine_sampling.py JSON, its setting): stage 2
    # trained again from a fresh run's other stages for its steps, with the roll, score taps from 4 kHz and the ridge
    ("demo", "the presets (`demo3/run`): no roll, no taps, least-squares start", "training_fresh.json",
     "fine_sampling_tail_floor.json", "af2"),
    ("demo", "stage 2 retrained as the presets (`demo3/run_s2c`, control)", "training_stage2_control.json", None, None),
    ("demo", "roll, 256 score taps from 4 kHz, ridge start (`demo3/run_s2r`); share power 0.03, temperature 0.6",
     "training_stage2_ridge_taps.json", "fine_sampling_stage2_ridge_taps.json", "run"),
    ("demo", "the same, stage 2 at temperature 0.4", "training_stage2_ridge_taps.json",
     "fine_sampling_stage2_ridge_taps.json", "t4"),
    ("demo", "the same, the network's share (power 1)", "training_stage2_ridge_taps.json",
     "fine_sampling_stage2_ridge_taps.json", "p1"),
    ("demo", "the same, the network's share, stage 2's scale clipped (k = 2)", "training_stage2_ridge_taps.json",
     "fine_sampling_stage2_ridge_taps_clip.json", "p1c2"),
    ("demo", "the same, the network's share, both fine stages' tier prior at sigma 0.03 (0.1)",
     "training_stage2_ridge_taps.json", "fine_sampling_stage2_ridge_taps_prior003.json", "p1s03"),
    ("demo", "the same, share power 0.03, tier prior sigma 0.03", "training_stage2_ridge_taps.json",
     "fine_sampling_stage2_ridge_taps_prior003_p003.json", "p003s03"),
    ("demo", "the same taps with 8 Hz lines (`demo3/run_s2b`); the network's share",
     "training_stage2_ridge_taps_bw8.json", "fine_sampling_stage2_ridge_taps_bw8.json", "p1"),
    ("other soundfont", "the presets (`demo4/run`)", "training_fresh_other_soundfont.json",
     "fine_sampling_tail_floor_other_soundfont.json", "af2"),
    ("other soundfont", "roll, 256 score taps from 4 kHz, ridge start (`demo4/run_s2r`); the network's share",
     "training_stage2_ridge_taps_other_soundfont.json", "fine_sampling_stage2_ridge_taps_other_soundfont.json", "p1"),
    ("other soundfont", "the same, share power 0.3", "training_stage2_ridge_taps_other_soundfont.json",
     "fine_sampling_stage2_ridge_taps_other_soundfont.json", "p3"))


def stage2_taps_table() -> str:
    """``STAGE2_TAPS_RUNS``: stage 2 with the notes (issue 21's "score taps in every stage") and the ridge start that
    keeps stage 1's taps from running away: its validation bits, and its genre and unconditional pieces' noise,
    bands, tier SNR and genre heard against the presets' stage 2 (same stage 0, stage 1, scores and seeds)."""
    lines = ["| corpus | stage 2 | steps | best validation bits | genre pieces: noisy 1 s windows (every window clean) "
             "| unconditional pieces with every window clean | 1-2 / 2-4 / 4-8 kHz re 0-1 kHz, genre pieces "
             "| band error, dB (MIDI / genre) | pieces with every tier SNR >= 20 dB | genre heard |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    said: set[Path] = set()
    for corpus, label, train_name, sampling_name, setting in STAGE2_TAPS_RUNS:
        paths = [HERE / n for n in (train_name, sampling_name) if n]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            notes += [absent(p) for p in missing if p not in said]  # each file once: rows share JSONs
            said.update(missing)
            continue
        t = json.loads(paths[0].read_text())
        st = t["stages"]["2"]
        cells = ["-"] * 6
        if sampling_name:
            fs = json.loads(paths[1].read_text())
            s = fs["settings"][setting]["summary"]
            m, g, u, acc = s["midi"], s["genre"], s.get("unconditional"), s["genre_recognised"]
            every = [x for x in (m, g, u) if x]
            cells = [f"{g['noisy_share_mean']:.1%} ({g['pieces_95pct_windows_clean']} of {g['pieces']})",
                     f"{u['pieces_95pct_windows_clean']} of {u['pieces']}" if u else "-",
                     _bands(g),
                     f"{m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f}",
                     f"{sum(x['pieces_all_tiers_snr_20db'] for x in every)} of {sum(x['pieces'] for x in every)}",
                     f"{acc['accuracy']:.2f} of {acc['clips']} clips"]
            notes.append(f"{corpus}, {label}, pieces: commit `{fs['commit'][:10]}`, `{fs['command']}`.")
        lines.append(f"| {corpus} | {label} | {st['steps']} | {st['best_valid_bits']:.3f} | "
                     + " | ".join(cells) + " |")
        notes.append(f"{corpus}, {label}, training: commit `{t['commit'][:10]}`, `{t['command']}`.")
    held = (("demo", HERE / "noise_trap_stage2_ridge_taps.json"),
            ("other soundfont", HERE / "noise_trap_stage2_ridge_taps_other_soundfont.json"))
    for corpus, r in present(held, notes):  # bench/noise_trap.py: teacher-forced on the test split
        bits = "; ".join(f"`{name}` {v['held_out']['2']['bits_per_sample']:.3f} "
                         f"({v['held_out']['2']['below_linear']:.3f} below its linear baseline "
                         f"{v['held_out']['2']['linear_baseline']:.3f}), own-past noise gain "
                         f"{v['taps']['2']['noise_gain']:.2f}"
                         for name, v in r["runs"].items())
        notes.append(f"{corpus}, stage 2 on held-out audio (the test split's first {r['max_seconds']:g} s of each "
                     f"track): {bits}; commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes)


LENGTH_TEMPERATURE_RUNS = (  # (corpus, label, bench/score_tier.py JSON): one tier, its length head drawn cooler
    ("demo", "1 (as trained)", "score_tier_fresh.json"),
    ("demo", "0.5", "score_tier_length_t05.json"),
    ("demo", "0.7", "score_tier_length_t07.json"),
    ("demo", "0.7 (the presets), sampled through the step kernel", "score_tier_kernel.json"),
    ("other soundfont", "1 (as trained)", "score_tier_fresh_other_soundfont.json"),
    ("other soundfont", "0.5", "score_tier_length_t05_other_soundfont.json"),
    ("other soundfont", "0.7 (the presets), sampled through the step kernel",
     "score_tier_kernel_other_soundfont.json"))


def length_temperature_table() -> str:
    """``LENGTH_TEMPERATURE_RUNS``: issue 19's length target for pieces whose length the tier chooses itself
    (``lengths.genre_chosen`` / ``unconditional_chosen``), at the length head's temperature as trained and cooler:
    the pieces ended by their own END within 0.5-2x the genre's median (and, where the JSON has them, the same
    over the genres whose median comes from >= 5 whole pieces, and unconditional pieces against the genre their
    notes sound like), the lengths chosen, and the time to write 60 s of score (issue 19's speed target)."""
    lines = ["| corpus | length head's temperature | genre pieces ended within 0.5-2x the genre's median (ended by "
             "END) | the same, genres with >= 5 whole pieces | unconditional pieces the same | unconditional, against "
             "the genre heard in its notes | lengths chosen, genre pieces (s) | lengths chosen, unconditional (s) "
             "| 60 s of score, one thread: guided genre / unconditional |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []

    def chosen(x: dict) -> str:  # the lengths asked of a row's pieces
        return ", ".join(f"{p['asked_seconds']:.0f}" for p in x["pieces"])

    for (corpus, label, name), r in present((((c, lab, n), HERE / n) for c, lab, n in LENGTH_TEMPERATURE_RUNS),
                                            notes):
        g, u = r["lengths"].get("genre_chosen"), r["lengths"].get("unconditional_chosen")
        if not g or not u:
            notes.append(f"Not shown: `docs/results/{name}` has no chosen lengths.")
            continue
        known = (f"{g['ended_within_range_where_reference']} of {g['of_where_reference']}"
                 if "of_where_reference" in g else "-")
        heard = f"{u['ended_within_range_of_heard_genre']} of {u['of']}" if "ended_within_range_of_heard_genre" in u \
            else "-"
        speed = (f"{r['speed_genre']['seconds_per_60s_of_score']:.2f} / {r['speed']['seconds_per_60s_of_score']:.2f} s"
                 f" (load {r['machine']['load_average'][0]:.1f})")
        lines.append(f"| {corpus} | {label} | {g['ended_within_range']} of {g['of']} ({g['ended_by_end_event']}) "
                     f"| {known} | {u['ended_within_range']} of {u['of']} ({u['ended_by_end_event']}) | {heard} "
                     f"| {chosen(g)} | {chosen(u)} | {speed} |")
        notes.append(f"{corpus}, {label}: step {r['run_steps']}; commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes + [""] + _length_choices_lines())


def _length_choices_lines() -> list[str]:
    """bench/length_choices.py's JSONs: per genre, the share of the chosen lengths within 0.5-2x the genre's median
    and their interquartile range, at each temperature, beside the training pieces'."""
    files = (("demo", HERE / "length_choices.json"), ("other soundfont", HERE / "length_choices_other_soundfont.json"))
    lines, notes = [], []
    for corpus, r in present(files, notes):
        genres = list(r["genres"])
        if not lines:
            lines = ["| corpus | lengths | " + " | ".join(genres) + " |", "| --- | --- |" + " --- |" * len(genres)]

        def cell(share: float, iqr) -> str:
            return f"{share:.2f} ({iqr[0]:.0f}-{iqr[1]:.0f} s)" if iqr else f"{share:.2f}"

        lines.append(f"| {corpus} | training pieces | " + " | ".join(
            cell(r["genres"][g]["training_share_within_half_to_twice_median"],
                 r["genres"][g]["training_interquartile_seconds"]) for g in genres) + " |")
        for t in r["temperatures"]:
            lines.append(f"| {corpus} | chosen at temperature {t:g} ({r['seeds']} per genre) | " + " | ".join(
                cell(r["genres"][g]["chosen"][str(t)]["share_within_half_to_twice_median"],
                     r["genres"][g]["chosen"][str(t)]["interquartile_seconds"]) for g in genres) + " |")
        notes.append(f"{corpus}: step {r['run_steps']}; commit `{r['commit'][:10]}`, `{r['command']}`.")
    return lines + [""] + notes if lines else notes


def resynth_table() -> str:
    """docs/results/fine_sampling_resynth.json: per test track, the bands of the MIDI-prompted piece (every stage),
    of its re-synthesis from the real coarse tier (the fine stages alone) and of the plain rendering."""
    path = HERE / "fine_sampling_resynth.json"
    if not path.is_file():
        return absent(path)
    r = json.loads(path.read_text())
    bands = ("1-2k", "2-4k", "4-8k")
    lines = ["| setting | fine stages' temperature | track | piece | 1-2 / 2-4 / 4-8 kHz, dB re 0-1 kHz "
             "| band error, dB | noisy windows |", "| --- | --- | --- | --- | --- | --- | --- |"]
    renders = {k[-8:]: v for k, v in r["references"]["renderings"].items()}
    for name, st in r["settings"].items():
        temps = (st.get("stage_temperature") or r["run_sampling"]["stage_temperature"])[-2:]  # the fine stages'
        for track in dict.fromkeys(p["name"].split("-", 1)[1] for p in st["pieces"] if p["name"].startswith("midi-")):
            key = track[-8:]
            for p in st["pieces"]:
                if p["name"] in (f"midi-{track}", f"resynth-{track}"):
                    kind = "every stage (MIDI prompt)" if p["name"].startswith("midi-") else \
                        "re-synthesised from the real 2 kHz tier"
                    lvls = " / ".join(_f(p["bands_db"].get(b), ".1f") for b in bands)
                    lines.append(f"| {name} | {', '.join(f'{t:g}' for t in temps)} | {track} | {kind} | {lvls} "
                                 f"| {p['band_error_db']:.1f} | {p['noisy_share']:.0%} |")
            ref = renders.get(key)
            if ref and name == next(iter(r["settings"])):
                lvls = " / ".join(_f(ref["bands"].get(b), ".1f") for b in bands)
                lines.append(f"| {name} | - | {track} | the plain rendering | {lvls} | - | - |")
    return "\n".join(lines + ["", f"Commit `{r['commit'][:10]}`, `{r['command']}`."])


def stage_runs_table(rows, held_files) -> str:
    """Runs whose stages 0 and 1 differ, a row each: validation and steps (training JSONs), held out (noise_trap
    JSONs, ``held_files`` [(column, path)], each run by its ``key``), genre recognised, noise, tier SNR, band error and
    note F1 (fine_sampling JSONs).  ``rows``: (corpus, key or None, label, [(stage, training JSON)], pieces JSON,
    setting, 80-clip pieces JSON or None)."""
    lines = ["| corpus | run | validation, stage 0 / 1 (steps) | held out, stage 0 / 1 (below linear) "
             "| held out, other soundfont | genre recognised | noisy windows, genre (clean pieces) "
             "| pieces with every tier SNR >= 20 dB | band error, dB (MIDI / genre) | note F1 (rendering) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    held = dict(present(held_files, notes))
    for corpus, key, label, trains, pieces, setting, more in rows:
        files = [(f"training {f}", HERE / f) for _, f in trains] + [(f"pieces {pieces}", HERE / pieces)]
        files += [(f"pieces {more}", HERE / more)] if more else []
        got = dict(present(dict(files).items(), notes))
        if len(got) < len(dict(files)):
            continue
        val = " / ".join(f"{got[f'training {f}']['stages'][k]['best_valid_bits']:.3f}" for k, f in trains)
        steps = " / ".join(str(got[f"training {f}"]["stages"][k]["steps"]) for k, f in trains)

        def held_cell(name: str) -> str:
            return held_bits(held.get(name), key, ("0", "1"))

        fs = got[f"pieces {pieces}"]["settings"][setting]["summary"]
        m, g, acc = fs["midi"], fs["genre"], fs["genre_recognised"]
        heard = f"{acc['accuracy']:.2f} of {acc['clips']} clips"
        if more:
            acc2 = got[f"pieces {more}"]["settings"][setting]["summary"]["genre_recognised"]
            heard += f"; {acc2['accuracy']:.2f} of {acc2['clips']}"
        f1 = f"{m['note_f1_mean']:.2f} ({m['rendering_note_f1_mean']:.2f})" if m.get("note_f1_mean") else "-"
        lines.append(f"| {corpus} | {label} | {val} ({steps}) | {held_cell('held out')} "
                     f"| {held_cell('held out, other soundfont')} | {heard} | {g['noisy_share_mean']:.0%} "
                     f"({g['pieces_95pct_windows_clean']} of {g['pieces']}) "
                     f"| {m['pieces_all_tiers_snr_20db'] + g['pieces_all_tiers_snr_20db']} of "
                     f"{m['pieces'] + g['pieces']} "
                     f"| {m['band_error_db_mean']:.1f} / {g['band_error_db_mean']:.1f} | {f1} |")
        for name, _ in files:
            notes.append(f"{label}, {name.split(' ', 1)[0]}: commit `{got[name]['commit'][:10]}`, "
                         f"`{got[name]['command']}`.")
    for name, h in held.items():
        notes.append(f"{name}: the test split's first {h['max_seconds']:g} s of each track; commit "
                     f"`{h['commit'][:10]}`, `{h['command']}`.")
    return "\n".join(lines + [""] + list(dict.fromkeys(notes)))


def _heard_notes(acc: dict) -> str:
    """The genre judged by the notes basic-pitch hears (later fine-sampling JSONs), beside the sound's."""
    n = acc.get("by_notes")
    return f" (by notes {n['accuracy']:.2f})" if n else ""


def tap_envelopes_table() -> str:
    """docs/results/tap_envelopes.json (+ recordings/): the score taps' prediction gain by harmonic weights."""
    lines = ["| corpus | rate | taps from | prediction gain, dB (mean over genres) | per genre |",
             "| --- | --- | --- | --- | --- |"]
    notes = []
    for corpus, r in present((("demo", HERE / "tap_envelopes.json"),
                              ("recordings", HERE / "recordings" / "tap_envelopes.json")), notes):
        for rate, x in r["rates"].items():
            for name, per in x["prediction_gain_db"].items():
                genres = ", ".join(f"{g} {v:.2f}" for g, v in per.items() if g != "mean")
                lines.append(f"| {corpus} | {int(rate) // 1000} kHz | {name} | {per['mean']:.2f} | {genres} |")
        notes.append(f"{corpus}: {r['order']} taps, test split; commit `{r['commit'][:10]}`, `{r['command']}`.")
    return "\n".join(lines + [""] + notes)


def opening_table() -> str:
    """docs/results/opening.json: stage 0 trained with and without opening crops (``opening_share``)."""
    path = HERE / "opening.json"
    if not path.is_file():
        return absent(path)
    r = json.loads(path.read_text())
    corpora = list(next(iter(r["runs"].values()))["stage0_bits"])
    lines = ["| run | opening_share | stage 0 steps | "
             + " | ".join(f"stage 0 bits, first {r['opening_seconds']:g} s / first {r['max_seconds']:g} s ({c})"
                          for c in corpora)
             + " | opening, 0-50 / 50-150 / 150-300 ms (dB re 0.5-1.5 s) | pieces with a noisy first window "
               "| pieces with <= 5% noisy windows | noisy windows (MIDI / genre) | genre recognised |",
             "| --- | --- | --- | " + " | ".join("---" for _ in corpora) + " | --- | --- | --- | --- | --- |"]
    for name, x in r["runs"].items():
        m, g, acc = x["summary"]["midi"], x["summary"]["genre"], x["summary"]["genre_recognised"]
        bits = " | ".join(f"{b['opening']['bits_per_sample']:.3f} / {b['first_seconds']['bits_per_sample']:.3f}"
                          for b in x["stage0_bits"].values())
        both = [v for v in (m, g) if v]
        opening = " / ".join(f"{v:.1f}" for v in g["opening_db_median"])
        lines.append(f"| {name} | {x['opening_share']:g} | {x['stage0_steps']} | {bits} | {opening} (genre pieces) "
                     f"| {sum(v['pieces_first_window_noisy'] for v in both)} of {sum(v['pieces'] for v in both)} "
                     f"| {sum(v['pieces_95pct_windows_clean'] for v in both)} of {sum(v['pieces'] for v in both)} "
                     f"| {_f(m and m['noisy_share_mean'], '.0%')} / {g['noisy_share_mean']:.0%} "
                     f"| {acc['accuracy']:.2f} of {acc['clips']} clips |")
    ref = " / ".join(f"{v:.1f}" for v in r["references"]["opening_db_median"])
    return "\n".join(lines + ["", f"Real test tracks open at {ref} dB (median). 8 s pieces with the runs' own "
                               f"sampling. Commit `{r['commit'][:10]}`, `{r['command']}`."])


SECTIONS = {"training": training_table, "score_tier": score_tier_table, "score_openings": score_openings_table,
            "score_sampling": score_sampling_table, "score_guidance": score_guidance_table,
            "fine_sampling": fine_sampling_table,
            "fine_levers": fine_levers_table, "silence_trap": silence_trap_table, "silence_high": silence_high_table,
            "stage0_steps": stage0_steps_table, "timbre": timbre_table,
            "crossfade": crossfade_table,
            "schedule": schedule_table, "tier_steps": tier_steps_table,
            "tier_steps_scores": tier_steps_scores_table, "key_input": key_input_table,
            "adapt_floor": adapt_floor_table, "fine_silence": fine_silence_table, "trained_floor": trained_floor_table,
            "stage2_taps": stage2_taps_table,
            "length_temperature": length_temperature_table,
            "resynth": resynth_table,
            "tap_envelopes": tap_envelopes_table, "opening": opening_table,
            "noise_trap": noise_trap_table,
            "evaluation": evaluation_table,
            "quality": quality_table, "recordings": recordings_table, "four_genres": four_genres_table,
            "four_genres_score_tier": four_genres_score_tier_table,
            "generation": generation_table, "draw_speed": draw_speed_table, "history_speed": history_speed_table,
            "quant_cost": quant_cost_table,
            "bench": bench_table, "faults": faults_table}


def render(text: str) -> str:
    for name, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        text = pattern.sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    old = README.read_text()
    new = render(old)
    if a.check:
        return 0 if new == old else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
