#!/usr/bin/env bash
# Runs on the GPU machine (after prepare.sh's two carries): joins and verifies the model, then
# checks cuda against cpu and benchmarks generation. Everything lands in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh  # binary, verified model ($model), texts
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== the user's command, on cuda (first run: kernels are compiled with NVRTC)"
/tmp/spotlight generate --backend cuda --prompt "The capital of France is" --max-tokens 8 --temperature 0 2>&1 | tee "$OUT/generate_cuda.txt"
echo "== the same command again (steady state)"
/tmp/spotlight generate --backend cuda --prompt "The capital of France is" --max-tokens 64 --temperature 0 2>&1 | tail -n 1

echo "== cpu vs cuda: logits, greedy tokens, perplexity on 4096 Moby-Dick tokens"
/tmp/spotlight check --backends cpu,cuda --ppl-tokens 4096 --json "$OUT/check_cuda.json" 2>&1 | tee "$OUT/check_cuda.txt"

echo "== benchmark: prefill and decode tokens/s on cuda"
/tmp/spotlight bench generate --backend cuda --batch 1,8 --prompt-tokens 512,4096 --new-tokens 64 --runs 5 \
  --out "$OUT/generate_cuda.json" 2>&1

echo "== device-to-device copy bandwidth (PyTorch), for the byte floor"
python3 benches/peers/copy_bandwidth.py --json "$OUT/copy_bandwidth.json" || echo "copy bandwidth probe failed"

echo "== independent reference and PyTorch peer: Hugging Face transformers on the same GGUF"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 benches/peers/hf_reference.py --gguf "$model" --text .gpu/moby-dick.txt --json "$OUT/hf_reference.json" || echo "hf reference failed"
