#!/usr/bin/env bash
# Fuzzes the loaders of untrusted files: `scripts/fuzz.sh TARGET SECONDS [SEED]`, TARGET one of
# gguf, safetensors, hash_file, config, tokenizer, checkpoint, or `all` (each for SECONDS).
# Stable Rust, the harness in crates/spotlight-fuzz (seeded mutations of the committed corpus; a
# panic, an allocation over 256 MiB or an input running over 20 s is a crash). Prints one JSON
# line per target; crashing inputs go to $SPOTLIGHT_FUZZ_CRASHES (default target/fuzz-crashes):
# fix the bug, then copy the input to crates/spotlight-fuzz/regressions/TARGET/.
# With FUZZ_ENGINE=libfuzzer it runs the cargo-fuzz project in fuzz/ instead (nightly, cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS [SEED]}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS [SEED]}"
seed="${3:-0}"
if [ "${FUZZ_ENGINE:-stable}" = libfuzzer ]; then
  targets="$target"
  [ "$target" = all ] && targets="gguf safetensors hash_file config tokenizer checkpoint"
  for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "../crates/spotlight-fuzz/corpus/$t" \
      "../crates/spotlight-fuzz/regressions/$t" -- -max_total_time="$seconds" \
      -malloc_limit_mb=256 -timeout=20 -seed="$seed")
  done
  exit 0
fi
export SPOTLIGHT_FUZZ_CRASHES="${SPOTLIGHT_FUZZ_CRASHES:-${CARGO_TARGET_DIR:-target}/fuzz-crashes}"
# The dev profile: optimised (Cargo.toml), with overflow checks in our crates, so an arithmetic
# overflow is a crash too; the same build the tests use.
cargo build --workspace --all-targets --locked  # as the tests build it (no per-package feature rebuild)
exec "${CARGO_TARGET_DIR:-target}/debug/spotlight-fuzz" "$target" "$seconds" "$seed"
