#!/usr/bin/env python3
"""Compares two `spotlight train` logs (train_log.csv) of the same seed and flags, run with
different --ops: per (layout, step) the mean loss over layers of each, and the largest relative
difference of per-layer losses at the first step (same init, same pairs: only rounding differs)
and at the last. Prints JSON."""
import csv, json, sys
from collections import defaultdict


def load(path):
    rows = {}
    for r in csv.DictReader(open(path)):
        rows[(r["layout"], int(r["step"]), int(r["layer"]))] = float(r["loss"])
    return rows


a, b = load(sys.argv[1]), load(sys.argv[2])
common = sorted(set(a) & set(b))
steps = sorted({s for _, s, _ in common})
out = {"files": sys.argv[1:3], "pairs_compared": len(common), "steps": len(steps)}
for name, step in [("first_step", steps[0]), ("last_step", steps[-1])]:
    keys = [k for k in common if k[1] == step]
    rel = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in keys]
    out[name] = {"step": step, "max_rel_diff": max(rel), "mean_rel_diff": sum(rel) / len(rel)}
curves = defaultdict(lambda: defaultdict(list))
for key in common:
    layout, step, _layer = key
    curves[layout][step].append((a[key], b[key]))
out["mean_loss"] = {
    layout: {
        str(s): [sum(x for x, _ in vs) / len(vs), sum(y for _, y in vs) / len(vs)]
        for s, vs in sorted(by_step.items())
        if s in (steps[0], steps[len(steps) // 2], steps[-1])
    }
    for layout, by_step in curves.items()
}
json.dump(out, sys.stdout, indent=2)
print()
