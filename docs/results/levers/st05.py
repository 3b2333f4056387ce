import json, sys
sys.path.insert(0, "/work/main")
from pipeline.generate import generate
g, midi, st = sys.argv[1], sys.argv[2], tuple(float(v) for v in sys.argv[3].split(","))
j = generate("/work/exp/demo_final/run", f"/work/exp/st_{g}_{sys.argv[3]}", midi=midi, genre=g, seconds=20, seed=1,
             stage_temperature=st, progress=False)[0]
d = json.loads((j / "meta.json").read_text())["diagnostics"]
s = d["score"]
print(g, st, "noisy", d["noise"]["noisy_share"], "flat", round(d["noise"]["flatness_median"], 4), "share",
      round((s["chroma_agreement"] - s["chroma_chance"]) / (s["chroma_reference"] - s["chroma_chance"]), 3), flush=True)
