#!/usr/bin/env bash
# Runs on the GPU machine (one call; carry [".gpu"] staged by `scripts/gpu/prepare.sh --no-model`):
# our retrieval kernels per stage, then the PyTorch peer on the same rows. Results land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/bin.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
/tmp/spotlight bench retrieval --backend cuda ${RETRIEVAL_ARGS:-} --out "$OUT/retrieval_ours.json" 2>&1 | grep -v '^\s*$'
[ "${PEER:-1}" = 0 ] && exit 0  # quick iteration: ours only
python3 benches/peers/retrieval_torch.py --ours "$OUT/retrieval_ours.json" --out "$OUT/retrieval.json"
python3 benches/peers/copy_bandwidth.py --json "$OUT/copy_bandwidth_torch.json" || echo "torch copy probe failed"
