#!/usr/bin/env bash
# Retrieval quality of the shipped hash against every baseline on the H200 (after prepare.sh's
# two carries: call 1 carries .gpu and .gpu1 and runs `STAGE=setup bash scripts/gpu/train.sh`,
# call 2 carries .gpu2 and runs this). QUALITY_ARGS adds flags to `spotlight eval retrieval`.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
mkdir -p /tmp/results
# shellcheck disable=SC2086
/tmp/spotlight eval retrieval --backend cuda \
  --hash models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors \
  --tokens 8192 --windows 2 --queries 64 ${QUALITY_ARGS:-} \
  --json /tmp/results/retrieval_quality.json 2>&1 | tail -n 40
tar czf "$OUT/results.tgz" -C /tmp/results .
