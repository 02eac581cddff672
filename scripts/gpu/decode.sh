#!/usr/bin/env bash
# Fast decode on the H200 (issue 6 and the end-to-end decode of issue 5), in two stages:
#   STAGE=kernels (no model; carry .gpu): the CUDA kernel tests (linear_mma_cuda), `spotlight bench linear` (+ PyTorch F.linear) and
#     `spotlight bench decode` (fused decoder, SYNTHETIC bf16 Llama-3-8B / SmolLM2 shapes, dense
#     and Spotlight, + a PyTorch eager decode of the same shapes) → $OUT/linear.json, decode.json.
#   STAGE=model (after .gpu1 and .gpu2 are on the machine): `spotlight bench generate` with the real
#     SmolLM2 at 4K, fused vs Burn tensor decode, dense and Spotlight, and `spotlight check`
#     (cpu vs cuda, which now decodes fused) → $OUT/generate.json, check.json.
# DECODE_ARGS / GENERATE_ARGS / LINEAR_ARGS add flags; CUDA_TESTS=0 skips the kernel tests. See scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
case "${STAGE:-kernels}" in
kernels)
  source scripts/gpu/bin.sh
  # The tensor-core linear kernel against its reference on this GPU first (stops here on failure).
  if [ "${CUDA_TESTS:-1}" = 1 ]; then
    SPOTLIGHT_CUDA_TESTS=1 /tmp/linear_mma_cuda --nocapture 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 8
  fi
  # shellcheck disable=SC2086
  /tmp/spotlight bench linear ${LINEAR_ARGS:-} --out "$OUT/linear_ours.json" 2>&1 | tail -n 30
  python3 benches/peers/linear_torch.py --ours "$OUT/linear_ours.json" --out "$OUT/linear.json" | tail -n 3
  # shellcheck disable=SC2086
  /tmp/spotlight bench decode --shapes llama3-8b,smollm2-135m ${DECODE_ARGS:-} \
    --out "$OUT/decode_ours.json" 2>&1 | tail -n 40
  python3 benches/peers/decode_torch.py --ours "$OUT/decode_ours.json" --out "$OUT/decode.json"
  ;;
model)
  source scripts/gpu/home.sh
  hash=models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors
  # shellcheck disable=SC2086
  /tmp/spotlight bench generate --backend cuda --attentions dense,spotlight --hash "$hash" \
    --decode-paths fused,tensor --batch 1,4,16 --prompt-tokens 4096 --new-tokens 64 --runs 2 \
    ${GENERATE_ARGS:-} --out "$OUT/generate.json" 2>&1 | tail -n 30
  /tmp/spotlight check --backends cpu,cuda --json "$OUT/check.json" 2>&1 | tail -n 12
  ;;
*)
  echo "STAGE must be kernels or model" >&2
  exit 2
  ;;
esac
