import json, os, sys
sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
from pipeline.generate import generate
out = sys.argv[1]
j = generate("/work/exp/run_score", out, seconds=8, midi="/work/exp/raw/renaissance/palestrina-Agnus_00.mid", genre="renaissance",
             stage_temperature=(1, 0.6, 0.6), seed=1, progress=False)[0]
d = json.loads((j / "meta.json").read_text())["diagnostics"]
print(os.environ.get("TOL"), j, round(d["noise"]["flatness_median"], 4), d["noise"]["noisy_share"], {k: round(v, 1) for k, v in d["tiers"]["snr_db"].items()}, round(d["score"]["chroma_agreement"], 3), flush=True)
