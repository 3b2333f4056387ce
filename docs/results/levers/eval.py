import json, sys, time
import os; sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
from pipeline.evaluate import evaluate_run
data, run, out = sys.argv[1], sys.argv[2], sys.argv[3]
ms = float(sys.argv[4]) if len(sys.argv) > 4 else None
t0 = time.time()
r = evaluate_run(data, run, split="test", max_seconds_per_track=ms, progress=False)
r["wall_seconds"] = time.time() - t0
json.dump(r, open(out, "w"), indent=1)
for s in r["stages"]:
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()})
print("wall", round(r["wall_seconds"], 1))
