#!/usr/bin/env bash
# Runs on the GPU machine (one call; carry [".gpu"] staged by `scripts/gpu/prepare.sh --no-model`):
# the decode linear kernel at Llama-3-8B / SmolLM2 projection shapes, then PyTorch's F.linear on
# the same rows. Results land in $OUT (copy linear.json to benches/results/decode_linear.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/bin.sh
/tmp/spotlight bench linear --out "$OUT/linear_ours.json" 2>&1
python3 benches/peers/linear_torch.py --ours "$OUT/linear_ours.json" --out "$OUT/linear.json"
