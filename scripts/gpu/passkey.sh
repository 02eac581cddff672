#!/usr/bin/env bash
# Passkey retrieval on 100 trials per context (task seeds 0-4, 20 trials each) with the shipped hash,
# dense and the linear hash alongside, on the GPU machine (carry as for fidelity.sh). Results:
# results.tgz with one JSON per seed and pooled.json (scripts/pool_trials.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
mkdir -p /tmp/passkey
for s in ${SEEDS:-0 1 2 3 4}; do
  /tmp/spotlight eval fidelity --backend cuda --methods "${METHODS:-spotlight,linear}" \
    --budgets "${BUDGET:-0.1}" --tasks passkey --contexts "${CONTEXTS:-1024,2048}" --seed "$s" \
    --json "/tmp/passkey/seed$s.json" 2>&1 | tail -n 6
done
python3 scripts/pool_trials.py /tmp/passkey/seed*.json > /tmp/passkey/pooled.json
cat /tmp/passkey/pooled.json
tar czf "$OUT/results.tgz" -C /tmp/passkey .
