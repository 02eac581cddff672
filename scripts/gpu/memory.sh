#!/usr/bin/env bash
# GPU out-of-memory as an error, on the H200 (after `prepare.sh --no-model`; carry .gpu):
#   the `gpu_memory` test binary (SPOTLIGHT_CUDA_TESTS=1): a K/V cache over the free memory is
#   refused with "K/V cache needs X GiB, the GPU has Y GiB free" before allocating (free memory
#   unchanged after the refusal); one a quarter of the free memory is allocated.
# → $OUT/memory.log
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/bin.sh
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader | tee "$OUT/memory.log"
gunzip -c .gpu/gpu_memory.gz > /tmp/gpu_memory && chmod +x /tmp/gpu_memory
SPOTLIGHT_CUDA_TESTS=1 /tmp/gpu_memory --nocapture 2>&1 | tee -a "$OUT/memory.log"
