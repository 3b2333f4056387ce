"""Target 6: unprompted stage-0 pieces with the end class: where do 10 seeded pieces end? python end_lengths.py RUN OUT [threshold]"""
import json, sys, time
import os; sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
import torch
from pipeline.generate import load_run, run_stage
run = load_run(sys.argv[1]); thr = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
torch.set_num_threads(1)
st = run.stages[0]; r0 = run.rates[0]; n = int(run.cfg.generate.max_seconds * r0)
genre = torch.arange(10) % len(run.genres)
t0 = time.time()
res = run_stage(st, n, 10, genre=genre, free_length=True, min_length=r0 // 100, round_to=r0 // 100,
                temperature=1.0, top_p=0.99, end_threshold=thr, generator=torch.Generator().manual_seed(0))
secs = [l / r0 for l in res.lengths]
out = {"run": sys.argv[1], "end_threshold": thr, "cap_seconds": n / r0, "seconds": secs,
       "ended": sum(l < n for l in res.lengths), "wall": time.time() - t0}
print(json.dumps(out)); json.dump(out, open(sys.argv[2], "w"), indent=1)
