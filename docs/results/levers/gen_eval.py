"""Generate target pieces from a run and collect their diagnostics: python gen_eval.py RUN OUT [seconds] [key=value ...]."""
import json, sys, time
from pathlib import Path
import os; sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
from pipeline.generate import generate

run, out = Path(sys.argv[1]), Path(sys.argv[2])
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
extra = dict(a.split("=") for a in sys.argv[4:])
kw = {k: float(v) for k, v in extra.items() if k in ("temperature", "top_p", "guidance")}
if "st" in extra:
    kw["stage_temperature"] = tuple(float(v) for v in extra["st"].split(","))
which = extra.get("which", "midi,resynth,genre").split(",")
m = json.load(open("/work/exp/data/manifest.json"))
test = [t for t in m["tracks"] if t["split"] == "test"]
summary = []
def job(name, **a):
    t0 = time.time()
    folders = generate(run, out / name, seconds=seconds, progress=False, seed=1, **kw, **a)
    meta = json.loads((folders[0] / "meta.json").read_text())
    d = meta.get("diagnostics", {})
    row = {"job": name, "folder": str(folders[0]), "wall": round(time.time() - t0, 1),
           "chroma": (d.get("score") or {}).get("chroma_agreement"), "chance": (d.get("score") or {}).get("chroma_chance"),
           "reference": (d.get("score") or {}).get("chroma_reference"),
           "flat_median": (d.get("noise") or {}).get("flatness_median"), "noisy_share": (d.get("noise") or {}).get("noisy_share"),
           "tier_snr": (d.get("tiers") or {}).get("snr_db"), "resynth": d.get("resynth")}
    print(json.dumps(row), flush=True)
    summary.append(row)
for t in (test if "midi" in which else [])[: int(extra.get("n_midi", 4))]:
    job("midi-" + t["id"][:24], midi=t["midi"], genre=t["genre"])
if "resynth" in which:
    for t in test[: int(extra.get("n_resynth", 2))]:
        job("resynth-" + t["id"][:24], resynth=t["source"])
if "genre" in which:
    for g in m["genres"][:2]:
        job("genre-" + g, genre=g)
json.dump({"run": str(run), "seconds": seconds, "params": kw, "jobs": summary}, open(out / "summary.json", "w"), indent=1)
