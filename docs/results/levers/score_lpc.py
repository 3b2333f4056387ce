"""Offline check: does a score-informed (per-frame, from the piano roll) LPC beat global LPC on the 2 kHz tier?"""
import json, sys, numpy as np
import os; sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
from pipeline.audio import mulaw_decode
D = "/work/exp/data"; m = json.load(open(f"{D}/manifest.json"))
RATE = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
import os; P = int(os.environ.get("P", 32)); FLOOR = float(os.environ.get("FLOOR", 1e-3)); ROLL = float(os.environ.get("ROLLOFF", 1)); HOP = RATE // 100
def levinson(r, P):  # r (N, P+1) -> a (N, P) with x_t ~ sum a_i x_{t-i}
    n = r.shape[0]; a = np.zeros((n, P)); e = r[:, 0].copy()
    for i in range(P):
        acc = r[:, i + 1] - np.einsum("nj,nj->n", a[:, :i], r[:, i:0:-1]) if i else r[:, 1].copy()
        k = acc / np.maximum(e, 1e-12)
        a_new = a.copy(); a_new[:, i] = k
        if i: a_new[:, :i] = a[:, :i] - k[:, None] * a[:, i - 1::-1][:, :i]
        a = a_new; e = e * (1 - k ** 2)
    return a
def kernel(sigma, rolloff=1.0):
    f = 440 * 2 ** ((np.arange(128) - 69) / 12); tau = np.arange(P + 1)
    K = np.zeros((128, P + 1))
    for h in range(1, 60):
        fh = h * f; ok = fh < 0.95 * RATE / 2
        K[ok] += (h ** -rolloff) ** 2 * np.cos(2 * np.pi * fh[ok, None] * tau / RATE)
    lag = np.exp(-0.5 * (2 * np.pi * sigma * tau / RATE) ** 2)
    return K * lag
def lagged(x):
    X = np.zeros((len(x), P))
    for i in range(1, P + 1): X[i:, i - 1] = x[:-i]
    return X
def bits(e, x):  # adaptive Laplace code length of residual e, proxy
    s = np.empty_like(e); acc = 0.01
    for t in range(len(e)): s[t] = acc; acc = 0.9 * acc + 0.1 * abs(e[t]) + 1e-4 * 0.1
    return np.mean(np.log2(2 * s) + np.abs(e) / s / np.log(2))
tr = [t for t in m["tracks"] if t["split"] == "train"]; E = os.environ.get("EVAL", D); me = json.load(open(f"{E}/manifest.json")); te = [t for t in me["tracks"] if t["split"] == "test"]
# global LPC fit
XX = np.zeros((P, P)); Xy = np.zeros(P)
for t in tr:
    x = mulaw_decode(np.load(f"{D}/{t['tiers'][str(RATE)]}")).astype(np.float64)
    X = lagged(x); XX += X.T @ X; Xy += X.T @ x
ag = np.linalg.solve(XX + 1e-6 * np.eye(P), Xy)
res = {}
for sigma in [float(s) for s in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["3", "10", "30"])]:
    K = kernel(sigma, ROLL)
    tot = {"global": [], "score": [], "blend": [], "oracle": []}
    for t in te[:6]:
        x = mulaw_decode(np.load(f"{E}/{t['tiers'][str(RATE)]}")).astype(np.float64)[: RATE * 30]
        roll = np.load(f"{E}/{t['roll']}")[0].astype(np.float64) / 127  # (128, F)
        n = len(x); fr = np.minimum(np.arange(n) // HOP, roll.shape[1] - 1)
        r = (roll.T ** 2) @ K  # (F, P+1)
        r[:, 0] = r[:, 0] * (1 + FLOOR) + 1e-9
        a = levinson(r, P)  # (F, P)
        on = roll.sum(0) > 0
        X = lagged(x); pg = X @ ag; ps = np.where(on[fr], np.einsum("tp,tp->t", X, a[fr]), pg)
        pb = 0.5 * (pg + ps)
        eg, es, eb = x - pg, x - ps, x - pb
        tot["global"].append(bits(eg, x)); tot["score"].append(bits(es, x)); tot["blend"].append(bits(eb, x))
        tot["oracle"].append(np.mean(np.minimum(np.abs(eg), np.abs(es)) ** 2) / np.mean(eg ** 2))
        print(t["id"], f"sigma={sigma}", {k: round(v[-1], 3) for k, v in tot.items()}, "on", round(on[fr].mean(), 2), flush=True)
    print("MEAN sigma", sigma, {k: round(float(np.mean(v)), 3) for k, v in tot.items()}, flush=True)
