#!/usr/bin/env bash
# Prefill on the H200 (issue 6, build item 4): the real SmolLM2 with dense attention on our
# flash-style causal kernel (`--decode-paths fused`) against Burn tensor-op attention (`tensor`),
# same job, 4K and 8K prompts, batch 1 and 4; TFLOP/s in the report. Model needed: after the
# .gpu, .gpu1 and .gpu2 carries (scripts/gpu/README.md). → $OUT/prefill.json
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
# shellcheck disable=SC2086
/tmp/spotlight bench generate --backend cuda --attentions dense --decode-paths fused,tensor \
  --batch 1,4 --prompt-tokens ${PROMPTS:-4096,8192} --new-tokens 8 --runs 3 --out "$OUT/prefill.json" 2>&1 | tail -n 30
