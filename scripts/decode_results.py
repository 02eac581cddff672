#!/usr/bin/env python3
"""Files the fast-decode run (`scripts/gpu/decode.sh`, both stages) under benches/results/:

    python3 scripts/decode_results.py DIR     # DIR holds linear.json, decode.json, generate.json, check.json

- decode_linear_h200.json, decode_synthetic_h200.json, generate_fused_h200.json,
  check_cpu_cuda_h200.json: the reports as written on the device;
- decode_dense.json: dense decode of our fused decoder next to PyTorch eager (issue 6's schema);
- e2e.json: dense vs Spotlight decode, per model, context and batch (issue 5's schema).
Then run scripts/results_tables.py."""
import json
import os
import shutil
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(ROOT, "benches", "results")


def load(d, name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


def write(name, obj):
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(obj, f, indent=1)
    print("wrote", name)


def main():
    src = sys.argv[1]
    for a, b in [("linear.json", "decode_linear_h200.json"), ("decode.json", "decode_synthetic_h200.json"),
                 ("generate.json", "generate_fused_h200.json"), ("check.json", "check_cpu_cuda_h200.json")]:
        shutil.copy(os.path.join(src, a), os.path.join(RESULTS, b))
        print("copied", b)
    dec, gen = load(src, "decode.json"), load(src, "generate.json")
    with open(os.path.join(RESULTS, "cuda_decode_kernel_profile_h200.json")) as f:
        before = json.load(f)
    synthetic = [r for r in dec["rows"] if not r["skipped"]]
    dense_rows = []
    for r in synthetic:
        if r["attention"] != "dense":
            continue
        dense_rows.append({"model": r["shape"], "synthetic": True, "dtype": r["dtype"], "context": r["context"],
                           "batch": r["batch"], "tok_s": r["tok_s"], "ms_per_step": r["ms_per_step"],
                           "torch_tok_s": r.get("torch_tok_s"), "torch_ms_per_step": r.get("torch_ms_per_step"),
                           "launches_per_step": r["launches_per_step"], "floor_ms": r["floor_ms"],
                           "floor_ratio": r["floor_ratio"]})
    for r in gen["rows"]:
        if r["attention"] == "dense":
            dense_rows.append({"model": gen["model"], "synthetic": False, "dtype": "f32", "context": r["prompt_tokens"],
                               "batch": r["batch"], "decode_path": r["decode_path"], "tok_s": r["decode_tok_s"],
                               "ms_per_step": r["decode_ms_per_step"],
                               "launches_per_step": r["fused_launches_per_step"]})
    layers = {s["name"]: s["layers"] for s in dec["shapes"]}
    write("decode_dense.json", {
        "device": dec["device"], "commit": dec["commit"], "date": dec["date"], "copy_gbps": dec["copy_gbps"],
        "launch_host_us": dec["launch_host_us"], "launch_wall_us": dec["launch_wall_us"],
        "commands": [dec["command"] + "   # + benches/peers/decode_torch.py", gen["command"]],
        "launches_per_layer": {
            "before (Burn tensor ops, SmolLM2, profiled)": before["launches_per_layer_per_forward"],
            "after, dense": 7, "after, spotlight layer": 12},
        "note": "synthetic rows: SYNTHETIC bf16 weights, random cache; real rows: SmolLM2-135M weights (f32), "
                "prompt from Moby-Dick; launches_per_step over " + ", ".join(f"{k} {v} layers" for k, v in layers.items()),
        "rows": dense_rows})
    e2e = []
    by_key = {}
    for r in synthetic:
        by_key.setdefault((r["shape"], r["context"], r["batch"]), {})[r["attention"]] = r
    for (shape, ctx, b), m in by_key.items():
        if "dense" not in m or "spotlight" not in m:
            continue
        d, s = m["dense"], m["spotlight"]
        e2e.append({"model": shape, "synthetic": True, "context": ctx, "batch": b,
                    "dense_tok_s": d["tok_s"], "spotlight_tok_s": s["tok_s"], "speedup": s["tok_s"] / d["tok_s"],
                    "torch_dense_tok_s": d.get("torch_tok_s"), "kv_read_share": s["kv_read_share"],
                    "dense_split_ms": {"weights": d["weights_ms"], "attention": d["attention_ms"]},
                    "spotlight_split_ms": {"weights": s["weights_ms"], "attention": s["attention_ms"],
                                           "retrieval": s["retrieval_ms"]}})
    for skipped in (r for r in dec["rows"] if r["skipped"] and r["attention"] == "dense"):
        e2e.append({"model": skipped["shape"], "synthetic": True, "context": skipped["context"],
                    "batch": skipped["batch"], "skipped": skipped["skipped"]})
    fused = {(r["attention"], r["batch"]): r for r in gen["rows"] if r["decode_path"] == "fused"}
    for (att, b), r in fused.items():
        if att != "dense" or ("spotlight-group", b) not in fused:
            continue
        s = fused[("spotlight-group", b)]
        e2e.append({"model": gen["model"], "synthetic": False, "context": r["prompt_tokens"], "batch": b,
                    "dense_tok_s": r["decode_tok_s"], "spotlight_tok_s": s["decode_tok_s"],
                    "speedup": s["decode_tok_s"] / r["decode_tok_s"], "torch_dense_tok_s": None,
                    "kv_read_share": s["kv_read_share"]})
    write("e2e.json", {"device": dec["device"], "commit": dec["commit"], "date": dec["date"],
                       "budget": "2% + sink 4 + window 64 (min 20); layers 0-1 dense",
                       "commands": [dec["command"] + "   # + benches/peers/decode_torch.py", gen["command"]],
                       "note": "synthetic rows: SYNTHETIC bf16 weights, random cache, random hash and key codes "
                               "(cost real, retrieval meaningless); real rows: SmolLM2-135M with its trained hash; "
                               "torch_dense_tok_s: PyTorch eager decode of the same shapes in the same job",
                       "rows": e2e})


if __name__ == "__main__":
    main()
