#!/usr/bin/env bash
# Spotlight decoding on the decode kernels against dense, on the H200, after prepare.sh's two
# carries: `spotlight bench generate --attentions dense,spotlight` (tokens/s and the K/V share
# read), then the passkey task at 4K through the kernel path, whose per-trial answers can be
# compared with the mask path's in benches/results/fidelity/trials.csv. BENCH_ARGS adds flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
hash=models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors
mkdir -p /tmp/results
# shellcheck disable=SC2086
/tmp/spotlight bench generate --backend cuda --attentions dense,spotlight --hash "$hash" \
  --batch 1,4 --prompt-tokens 4096,8000 --new-tokens 64 --runs 2 ${BENCH_ARGS:-} \
  --out /tmp/results/decode_sparse_h200.json 2>&1 | tail -n 30
/tmp/spotlight eval fidelity --backend cuda --hash "$hash" --methods spotlight --budgets 0.02 \
  --tasks passkey --contexts 4096 --json /tmp/results/kernel_check/fidelity.json 2>&1 | tail -n 3
tar czf "$OUT/results.tgz" -C /tmp/results .
