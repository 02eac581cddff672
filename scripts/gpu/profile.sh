#!/usr/bin/env bash
# Per-kernel log of a short CUDA generation (CubeCL's own profiler): which kernels run per decode
# step and how long each takes. Needs the same carries as run.sh. Output: $OUT/cubecl_profile.log.gz
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}" SPOTLIGHT_HOME=/tmp/spotlight-home
mkdir -p "$SPOTLIGHT_HOME/models"
model="$SPOTLIGHT_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || cat .gpu1/model.part1 .gpu2/model.part2 > "$model"
echo verified > "$SPOTLIGHT_HOME/models/.verified"
gunzip -c .gpu/spotlight.gz > /tmp/spotlight && chmod +x /tmp/spotlight
# Warm run (compiles every kernel), then the profiled run of the same shapes.
/tmp/spotlight generate --backend cuda --prompt "The capital of France is" --max-tokens 16 --temperature 0 >/dev/null 2>&1
CUBECL_DEBUG_LOG=/tmp/cubecl.log CUBECL_DEBUG_OPTION=profile \
  /tmp/spotlight generate --backend cuda --prompt "The capital of France is" --max-tokens 16 --temperature 0 2>&1 | tail -n 2
wc -l /tmp/cubecl.log
gzip -c /tmp/cubecl.log > "$OUT/cubecl_profile.log.gz"
