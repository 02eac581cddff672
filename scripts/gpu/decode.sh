#!/usr/bin/env bash
# Fast decode on the H200 (issue 6 and the end-to-end decode of issue 5), in two stages:
#   STAGE=kernels (no model; carry .gpu): the CUDA tests (linear_mma_cuda; cuda_graphs: graph
#     replays against plain launches), `spotlight bench linear` (+ PyTorch F.linear; LINEAR=0 skips
#     it) and `spotlight bench decode` (fused decoder, SYNTHETIC bf16 Llama-3-8B / SmolLM2 shapes,
#     dense and Spotlight, CUDA graphs off and on, + a PyTorch eager decode of the same shapes)
#     → $OUT/linear.json, decode.json.
#   STAGE=model (after the model parts are on the machine): the cuda_graphs test on the real
#     SmolLM2, `spotlight bench generate` at 4K, fused (graphs off and on) vs Burn tensor decode,
#     dense and Spotlight, and `spotlight check` (cpu vs cuda) → $OUT/generate.json, check.json.
# DECODE_ARGS / GENERATE_ARGS / LINEAR_ARGS add flags; CUDA_TESTS=0 skips the tests. See scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
case "${STAGE:-kernels}" in
kernels)
  source scripts/gpu/bin.sh
  # The tensor-core linear kernel against its reference on this GPU first (stops here on failure).
  if [ "${CUDA_TESTS:-1}" = 1 ]; then
    SPOTLIGHT_CUDA_TESTS=1 /tmp/kernels cuda:: 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 8
    SPOTLIGHT_CUDA_TESTS=1 /tmp/linear_mma_cuda --nocapture 2>&1 | tee -a "$OUT/cuda_tests.log" | tail -n 8
    SPOTLIGHT_CUDA_TESTS=1 /tmp/cuda_graphs --nocapture --test-threads 1 2>&1 | tee "$OUT/cuda_graphs.log" | tail -n 20
  fi
  if [ "${LINEAR:-1}" = 1 ]; then
    # shellcheck disable=SC2086
    /tmp/spotlight bench linear ${LINEAR_ARGS:-} --out "$OUT/linear_ours.json" 2>&1 | tail -n 30
    python3 benches/peers/linear_torch.py --ours "$OUT/linear_ours.json" --out "$OUT/linear.json" | tail -n 3
  fi
  # shellcheck disable=SC2086
  /tmp/spotlight bench decode --shapes llama3-8b,smollm2-135m ${DECODE_ARGS:-} \
    --out "$OUT/decode_ours.json" 2>&1 | tail -n 40
  python3 benches/peers/decode_torch.py --ours "$OUT/decode_ours.json" --out "$OUT/decode.json"
  ;;
model)
  source scripts/gpu/home.sh
  hash=models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors
  if [ "${CUDA_TESTS:-1}" = 1 ]; then
    SPOTLIGHT_CUDA_TESTS=1 SPOTLIGHT_GGUF="$model" SPOTLIGHT_TEXT="$SPOTLIGHT_HOME/texts/moby-dick/data.txt" \
      /tmp/cuda_graphs --nocapture real_model 2>&1 | tee "$OUT/cuda_graphs_real.log" | tail -n 8
  fi
  # shellcheck disable=SC2086
  /tmp/spotlight bench generate --backend cuda --attentions dense,spotlight --hash "$hash" \
    --decode-paths fused,tensor --cuda-graphs off,on --batch 1,4,16 --prompt-tokens 4096 \
    --new-tokens 64 --runs 2 ${GENERATE_ARGS:-} --out "$OUT/generate.json" 2>&1 | tail -n 30
  /tmp/spotlight check --backends cpu,cuda --json "$OUT/check.json" 2>&1 | tail -n 12
  ;;
*)
  echo "STAGE must be kernels or model" >&2
  exit 2
  ;;
esac
