#!/usr/bin/env bash
# `spotlight serve` on the H200: throughput and time to first token with 1/4/16 concurrent
# streaming clients at 4K and 8K prompts, dense vs Spotlight (trained hash, budget 2%, selecting
# from the first token: --dense-below 0). One server per attention, 16 slots of 8192 tokens (the model's positions; 8K prompts are 8,064 tokens + 64 new).
# Needs the binary and the model on the machine (scripts/gpu/README.md: prepare.sh, then calls
# carrying .gpu, .gpu1, .gpu2); run as the last call: "bash scripts/gpu/serve.sh".
# Writes $OUT/serve.json (both runs, copy bandwidth, server counters, commit and device), the
# servers' logs and /metrics, and the client log.
# DECODE_PATH=tensor decodes on Burn tensor ops instead of the fused decoder; SERVE_ARGS adds server flags, BENCH_ARGS client flags (e.g. BENCH_ARGS="--clients 1,4").
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
hash=models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors
port=18080
for attention in dense spotlight; do
  extra=""
  if [ "$attention" = spotlight ]; then extra="--hash $hash --dense-below 0"; fi
  # shellcheck disable=SC2086
  /tmp/spotlight serve --backend cuda --host 127.0.0.1 --port "$port" --slots 16 --ctx-size 8192 \
    --max-queue 16 --attention "$attention" --decode-path "${DECODE_PATH:-fused}" $extra ${SERVE_ARGS:-} 2> "$OUT/serve_$attention.log" &
  pid=$!
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then break; fi
    sleep 0.5
  done
  # shellcheck disable=SC2086
  python3 scripts/serve_bench.py --base "http://127.0.0.1:$port" --clients 1,4,16 \
    --prompt-tokens 4096,8064 --new-tokens 64 --label "$attention" ${BENCH_ARGS:-} \
    --out "$OUT/serve_$attention.json" | tee -a "$OUT/serve_bench.log"
  curl -s "http://127.0.0.1:$port/metrics" > "$OUT/serve_${attention}_metrics.txt"
  kill -TERM "$pid"
  wait "$pid"
done
# Device-to-device copy bandwidth (PyTorch), for the byte floor of a decode step.
python3 benches/peers/copy_bandwidth.py --json "$OUT/copy_bandwidth.json" || echo "copy bandwidth probe failed"
python3 - "$OUT" <<'EOF'
import json, subprocess, sys
out = sys.argv[1]
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
import os
runs = {a: json.load(open(f"{out}/serve_{a}.json")) for a in ("dense", "spotlight")}
# The servers' own counters: seconds per decode step and per prefill, over the whole run.
for a, run in runs.items():
    m = {}
    for line in open(f"{out}/serve_{a}_metrics.txt"):
        if line and not line.startswith("#") and " " in line:
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    run["server"] = {
        "decode_steps": m["spotlight_decode_steps_total"],
        "decode_ms_per_step": 1e3 * m["spotlight_decode_seconds_total"]
        / max(m["spotlight_decode_steps_total"], 1),
        "mean_decode_rows": m["spotlight_decode_rows_total"] / max(m["spotlight_decode_steps_total"], 1),
        "prefills": m["spotlight_prefill_total"],
        "prefill_ms_mean": 1e3 * m["spotlight_prefill_seconds_total"] / max(m["spotlight_prefill_total"], 1),
    }
json.dump({"command": "bash scripts/gpu/serve.sh", "commit": os.environ.get("SPOTLIGHT_COMMIT"),
           "device": gpu, "backend": "cuda", "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "config": {"decode_path": os.environ.get("DECODE_PATH", "fused"), "slots": 16, "ctx_size": 8192, "new_tokens": 64, "budget": 0.02,
                      "dense_below": 0, "prompt": "token ids, greedy"},
           "copy_bandwidth": (json.load(open(f"{out}/copy_bandwidth.json"))
                              if os.path.exists(f"{out}/copy_bandwidth.json") else None),
           "runs": runs}, open(f"{out}/serve.json", "w"), indent=1)
EOF
# Merged into serve.json: removed, so every log and metrics file fits in what comes back.
rm -f "$OUT"/serve_dense.json "$OUT"/serve_spotlight.json "$OUT"/copy_bandwidth.json
echo "wrote $OUT/serve.json"
