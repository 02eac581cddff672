#!/usr/bin/env bash
# CUDA graphs on the H200, step by step, each step under its own time limit so a hang costs
# minutes, not the call (logs are written as it goes, so they come back whatever happens):
#   1. the cuda_graphs tests, smallest first: SmolLM2's shape dense at batch 1 (it stops here if
#      that fails), a refused host copy, then every batch dense and Spotlight on both shapes;
#   2. `spotlight bench decode` at 4K, graphs off and on side by side (+ the PyTorch eager peer);
#   3. with STAGE=model (the model parts on the machine): the real-model test and
#      `spotlight bench generate --cuda-graphs off,on`.
# Carry the binaries only: [".gpu/spotlight.gz", ".gpu/cuda_graphs.gz", ".gpu/commit"] (the whole
# .gpu folder with the working tree passes 64 MiB). See scripts/gpu/README.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/bin.sh
step() { # step LIMIT_S LOG command…: runs one stage, its log kept under $OUT
  local limit=$1 log=$2
  shift 2
  echo "== $*" | tee -a "$OUT/$log"
  timeout -k 5 "$limit" "$@" >> "$OUT/$log" 2>&1
  local rc=$?
  echo "== rc=$rc" | tee -a "$OUT/$log"
  tail -n 6 "$OUT/$log"
  return $rc
}
export SPOTLIGHT_CUDA_TESTS=1
case "${STAGE:-synthetic}" in
synthetic)
  step 90 graphs_tests.log /tmp/cuda_graphs --nocapture --exact smollm2_dense_batch_1 || exit 1
  step 60 graphs_tests.log /tmp/cuda_graphs --nocapture --exact a_recording_with_a_host_copy_is_refused
  step 150 graphs_tests.log /tmp/cuda_graphs --nocapture --exact smollm2_every_batch_dense_and_spotlight
  step 200 graphs_tests.log /tmp/cuda_graphs --nocapture --exact llama3_8b_every_batch_dense_and_spotlight
  step 240 decode.log /tmp/spotlight bench decode --shapes smollm2-135m,llama3-8b --contexts 4096 \
    --batch 1,4,16 --runs 2 --cuda-graphs off,on ${DECODE_ARGS:-} --out "$OUT/decode_ours.json"
  step 200 decode.log python3 benches/peers/decode_torch.py --ours "$OUT/decode_ours.json" --out "$OUT/decode.json"
  ;;
model)
  source scripts/gpu/home.sh
  hash=models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors
  export SPOTLIGHT_GGUF="$model" SPOTLIGHT_TEXT="$SPOTLIGHT_HOME/texts/moby-dick/data.txt"
  step 120 graphs_real.log /tmp/cuda_graphs --nocapture --exact real_model_graph_replays_equal_plain_launches
  step 400 generate.log /tmp/spotlight bench generate --backend cuda --attentions dense,spotlight \
    --hash "$hash" --decode-paths fused --cuda-graphs off,on --batch 1,4,16 --prompt-tokens 4096 \
    --new-tokens 64 --runs 2 --out "$OUT/generate.json"
  ;;
*)
  echo "STAGE must be synthetic or model" >&2
  exit 2
  ;;
esac
