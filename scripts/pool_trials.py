#!/usr/bin/env python3
"""Pool the per-trial scores of several `spotlight eval fidelity` runs (one JSON each, with the
trials.csv in the folder of the same name beside it): per (task, context, method, budget), the
trials, the passes and the pass rate, plus trials where the method and dense disagree."""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

runs = sys.argv[1:]
pooled = defaultdict(lambda: {"trials": 0, "score": 0.0})
disagree = defaultdict(lambda: {"method_only": 0, "dense_only": 0})
commits = set()
devices = set()
for run in runs:
    meta = json.load(open(run))
    commits.add(meta.get("commit"))
    devices.add(meta.get("device"))
    trials = Path(run).with_suffix("") / "trials.csv"
    rows = list(csv.DictReader(open(trials)))
    dense = {(r["task"], r["context"], r["depth"], r["trial"]): float(r["score"])
             for r in rows if r["method"] == "dense"}
    for r in rows:
        key = (r["task"], r["context"], r["method"], r["budget"])
        pooled[key]["trials"] += 1
        pooled[key]["score"] += float(r["score"])
        if r["method"] != "dense":
            d = dense[(r["task"], r["context"], r["depth"], r["trial"])]
            if float(r["score"]) > d:
                disagree[key]["method_only"] += 1
            elif float(r["score"]) < d:
                disagree[key]["dense_only"] += 1
out = {
    "runs": runs,
    "commits": sorted(c for c in commits if c),
    "devices": sorted(d for d in devices if d),
    "rows": [
        {"task": t, "context": int(c), "method": m, "budget": float(b),
         "trials": v["trials"], "passes": v["score"], "pass_rate": v["score"] / v["trials"],
         **({"passed_only_here": disagree[(t, c, m, b)]["method_only"],
             "passed_only_by_dense": disagree[(t, c, m, b)]["dense_only"]} if m != "dense" else {})}
        for (t, c, m, b), v in sorted(pooled.items())
    ],
}
print(json.dumps(out, indent=1))
