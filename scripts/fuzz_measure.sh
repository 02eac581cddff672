#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) one after another and writes
# benches/results/fuzz/fuzz_<date>.json: per target the commit, date, seconds, executions, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
cargo build -p spotlight-fuzz --bin spotlight-fuzz
bin="${CARGO_TARGET_DIR:-target}/debug/spotlight-fuzz"
export SPOTLIGHT_FUZZ_CRASHES="${SPOTLIGHT_FUZZ_CRASHES:-${CARGO_TARGET_DIR:-target}/fuzz-crashes}"
commit=$(git describe --always --dirty --abbrev=7)
date=$(date -u +%Y-%m-%d)
mkdir -p benches/results/fuzz
out="benches/results/fuzz/fuzz_${date}.json"
lines=()
for t in gguf safetensors hash_file config tokenizer checkpoint; do
  line=$("$bin" "$t" "$seconds" 1 || true)
  echo "$line"
  lines+=("$line")
done
printf '%s\n' "${lines[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(json.dumps({"commit": sys.argv[1], "date": sys.argv[2], "machine": sys.argv[3],
    "targets": [{k: r[k] for k in ("target", "seconds", "execs", "crashes", "slow", "seeds", "corpus", "answers", "crash_files")} for r in rows]}, indent=1))
' "$commit" "$date" "$(nproc) CPU cores, shared, nice 19" > "$out"
echo "wrote $out"
