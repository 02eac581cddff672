#!/usr/bin/env bash
# Builds the binary here (the dev profile: optimised, the same build the tests use, so no second
# cold build) and stages what the GPU machine needs in git-ignored folders:
#   .gpu/   the stripped, gzipped `spotlight` binary and CUDA kernel-test binary, Moby-Dick, the State of the Union texts
#           (training text, gzipped tar), the commit id                       (carried in call 1)
#   .gpu1/ … .gpuN/  the default model's GGUF in parts, each small enough to travel with the
#           working tree in one call                                            (one call each)
# One call may carry 64 MiB, working tree included (the shipped hash files count); the model is
# 98 MB, so it travels in back-to-back calls (the machine stays warm ~30 s between them), and
# `home.sh` joins the parts and checks the sha256 there. See scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# With --no-model only .gpu/ is staged (enough for `retrieval.sh`).
# The whole workspace, as the tests build it: `-p spotlight-cli` alone unifies features differently
# and would rebuild CubeCL and Burn a second time.
cargo build --workspace --all-targets --locked
bin="${CARGO_TARGET_DIR:-target}/debug/spotlight"
"$bin" fetch >/dev/null
home="${SPOTLIGHT_HOME:-$HOME/.cache/spotlight}"
rm -rf .gpu .gpu[1-9]
mkdir -p .gpu
cp "$bin" .gpu/spotlight
strip .gpu/spotlight
gzip -9 .gpu/spotlight
# The test binaries that need CUDA (run there with SPOTLIGHT_CUDA_TESTS=1 by the GPU scripts): every
# kernel against its reference (`kernels`, its `cuda::` tests), the tensor-core linear kernel's,
# CUDA graphs against plain launches, and the out-of-memory check's (scripts/gpu/memory.sh).
cargo test --workspace --all-targets --locked --no-run --message-format=json 2>/dev/null > /tmp/spotlight-tests.json
for name in kernels linear_mma_cuda cuda_graphs gpu_memory; do
  test_bin=$(python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, open(sys.argv[1])) if m.get("target", {}).get("name") == sys.argv[2] and m.get("executable")][-1])' /tmp/spotlight-tests.json "$name")
  cp "$test_bin" ".gpu/$name"
  strip ".gpu/$name"
  gzip -9 ".gpu/$name"
done
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
# Parts small enough that each travels with the working tree in one 64 MiB call.
tree_mb=$(( $(git ls-files -z | du --files0-from=- -cb 2>/dev/null | tail -n 1 | cut -f1) / 1000000 ))
part_mb=$(( 60 - tree_mb ))
[ "$part_mb" -ge 8 ] || { echo "the working tree ($tree_mb MB) leaves no room for the model" >&2; exit 1; }
split -b "${part_mb}000000" -d -a 1 "$model" /tmp/spotlight-model.part
i=1
for p in /tmp/spotlight-model.part*; do
  mkdir -p ".gpu$i" && mv "$p" ".gpu$i/model.part$i"
  i=$((i + 1))
done
du -sh .gpu .gpu[1-9]
