#!/usr/bin/env bash
# Builds the binary here (the dev profile: optimised, the same build the tests use, so no second
# cold build) and stages what the GPU machine needs in git-ignored folders:
#   .gpu/   the stripped, gzipped `spotlight` binary and CUDA kernel-test binary, Moby-Dick, the State of the Union texts
#           (training text, gzipped tar), the commit id                       (carried in call 1)
#   .gpu1/  first part of the default model's GGUF                             (carried in call 1)
#   .gpu2/  second part of the GGUF                                             (carried in call 2)
# One call may carry 64 MiB (working tree included: the 6 MB hash file counts), the model is
# 98 MB: two back-to-back calls (48 + 50 MB, each under 64 MiB with the ~11 MB tree), then `run.sh` joins the
# parts and checks the sha256 there. See scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# With --no-model only .gpu/ is staged (enough for `retrieval.sh`).
cargo build -p spotlight-cli --bin spotlight
bin="${CARGO_TARGET_DIR:-target}/debug/spotlight"
"$bin" fetch >/dev/null
home="${SPOTLIGHT_HOME:-$HOME/.cache/spotlight}"
rm -rf .gpu .gpu1 .gpu2
mkdir -p .gpu .gpu1 .gpu2
cp "$bin" .gpu/spotlight
strip .gpu/spotlight
gzip -9 .gpu/spotlight
# The kernel tests that need CUDA (run there with SPOTLIGHT_CUDA_TESTS=1 by the GPU scripts).
test_bin=$(cargo test -p spotlight-kernels --test linear_mma_cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
cp "$test_bin" .gpu/linear_mma_cuda
strip .gpu/linear_mma_cuda
gzip -9 .gpu/linear_mma_cuda
# The GPU out-of-memory test (scripts/gpu/memory.sh).
mem_bin=$(cargo test -p spotlight-llama --test gpu_memory --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
cp "$mem_bin" .gpu/gpu_memory
strip .gpu/gpu_memory
gzip -9 .gpu/gpu_memory
cp "$home/texts/moby-dick/data.txt" .gpu/moby-dick.txt
tar czf .gpu/sotu.tgz -C "$home/texts" $(cd "$home/texts" && ls sotu/*.txt austen/*.txt)
# The plot font (the GPU machine has no npm to fetch it), with its verification marker.
tar czf .gpu/fonts.tgz -C "$home" fonts/dejavu
git describe --always --dirty --abbrev=7 > .gpu/commit
if [ "${1:-}" = "--no-model" ]; then
  du -sh .gpu
  exit 0
fi
model="$home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
head -c 48000000 "$model" > .gpu1/model.part1
tail -c +48000001 "$model" > .gpu2/model.part2
du -sh .gpu .gpu1 .gpu2
