#!/usr/bin/env bash
# Fidelity of sparse attention against dense on the H200 (`spotlight eval fidelity`), after
# prepare.sh's two carries (call 1: .gpu + .gpu1, call 2: .gpu2). FIDELITY_TASKS picks this call's
# tasks (a full evaluation does not fit one 10-minute call); the report in /tmp/results accumulates
# over calls on the same warm machine (--merge) and every call returns it as results.tgz.
# FIDELITY_ARGS adds flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
mkdir -p /tmp/results
# shellcheck disable=SC2086
/tmp/spotlight eval fidelity --backend cuda \
  --hash models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors \
  --tasks "${FIDELITY_TASKS:-ppl,passkey,multikey,vartrack,agreement}" ${FIDELITY_ARGS:-} \
  --merge --json /tmp/results/fidelity.json 2>&1 | tail -n 100
tar czf "$OUT/results.tgz" -C /tmp/results .
