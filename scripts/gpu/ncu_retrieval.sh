#!/usr/bin/env bash
# Runs on the GPU machine (carry [".gpu"]): Nsight Compute on the retrieval and attention kernels
# at one size, to see where their time goes. Output: $OUT/ncu_retrieval.txt.
# NCU_KERNELS (regex), NCU_SKIP, NCU_COUNT, NCU_TOKENS, NCU_SHAPES, NCU_BATCH choose what is profiled.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
gunzip -c .gpu/spotlight.gz > /tmp/spotlight && chmod +x /tmp/spotlight
ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
"$ncu" --kernel-name regex:"${NCU_KERNELS:-score_hist|partial|count|compact|threshold|copy}" --launch-skip "${NCU_SKIP:-8}" --launch-count "${NCU_COUNT:-6}" \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
  /tmp/spotlight bench retrieval --backend cuda --tokens "${NCU_TOKENS:-524288}" --shapes "${NCU_SHAPES:-32/8/128}" --batch "${NCU_BATCH:-1}" --runs 1 --copy-mib 64 \
  --out /tmp/ncu_bench.json 2>&1 |
  # ncu's rule texts cite documentation by web address; the repository keeps no web addresses.
  sed -E 's#\(?[a-z]+://[^ )]*\)?#(Nsight Compute docs)#g' > "$OUT/ncu_retrieval.txt" || true
tail -c 300 "$OUT/ncu_retrieval.txt"
