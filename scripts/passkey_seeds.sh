#!/usr/bin/env bash
# Passkey pass rates on more trials than the fidelity table's 20: `spotlight eval fidelity` once per
# task seed (each seed draws new keys and haystack offsets; 10 depths × 2 needles per seed), then
# the pooled pass rate of each method with its count. Runs anywhere (default: the CPU, mask path).
# SEEDS, CONTEXT, BUDGET, METHODS, BACKEND and DIR override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2 3 4"}
DIR=${DIR:-benches/results/passkey_seeds_cpu}
mkdir -p "$DIR"
cargo build -q --release -p spotlight-cli
for s in $SEEDS; do
  ./target/release/spotlight eval fidelity --backend "${BACKEND:-cpu}" \
    --methods "${METHODS:-spotlight,linear}" --budgets "${BUDGET:-0.1}" --tasks passkey \
    --contexts "${CONTEXT:-1024}" --seed "$s" --json "$DIR/seed$s.json" | tail -n 4
done
python3 scripts/pool_trials.py "$DIR"/seed*.json > "$DIR/pooled.json"
cat "$DIR/pooled.json"
