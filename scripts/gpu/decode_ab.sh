#!/usr/bin/env bash
# Dense decode on the H200 with the model's projections on our decode linear kernel vs on Burn's
# matmul (SPOTLIGHT_PROJECTION=matmul), same binary, same job; plus cpu-vs-cuda agreement.
# After prepare.sh's two carries (call 1: `STAGE=setup bash scripts/gpu/train.sh`, call 2 this).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
/tmp/spotlight check --backends cpu,cuda --ppl-tokens 512 --json "$OUT/check_cuda.json" 2>&1 | tail -n 4
for mode in kernel matmul; do
  if [ "$mode" = matmul ]; then export SPOTLIGHT_PROJECTION=matmul; fi
  /tmp/spotlight bench generate --backend cuda --batch 1,8 --prompt-tokens 512,4096 --new-tokens 32 --runs 3 \
    --out "$OUT/generate_cuda_$mode.json" 2>&1 | tail -n 6
done
