#!/usr/bin/env bash
# Trains several hash variants side by side on the GPU machine (one process each: the SmolLM2
# training kernels are small, so they share the H200), then evaluates them all in one
# `eval retrieval` on held-out text. After prepare.sh and `STAGE=setup bash scripts/gpu/train.sh`
# (calls 1 and 2: carry .gpu, then .gpu1), in call 3 (carry .gpu2):
#   VARIANTS="rot128:--bits 128 --init rotation;rot64:--init rotation" bash scripts/gpu/train_variants.sh
# Each variant is LABEL:FLAGS, added to the common recipe below (FLAGS); its hash files are
# evaluated as "LABEL" rows. Results (JSON, CSV, plots, curves) come back in $OUT as results.tgz,
# the f16 hash files as hashes.tar.part* (below).
# GENERATE=1 adds a CUDA-against-CPU greedy decode with each group hash (below).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
: "${VARIANTS:?LABEL:FLAGS;LABEL:FLAGS...}"
source scripts/gpu/home.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
STEPS="${STEPS:-700}"
LAYOUT="${LAYOUT:-group}"
FLAGS=(--backend cuda --seq-len 4096 --queries 1024 --pairs 1024 --checkpoint-every 50 --seed 0
  --steps "$STEPS" --layout "$LAYOUT")
mkdir -p /tmp/results
rm -rf /tmp/hashes  # a warm machine keeps /tmp: send back only this call's hashes
pids=()
labels=()
IFS=';' read -ra specs <<< "$VARIANTS"
for spec in "${specs[@]}"; do
  label="${spec%%:*}"
  extra="${spec#*:}"
  labels+=("$label")
  # shellcheck disable=SC2086
  timeout -s KILL "${TRAIN_SECONDS:-470}" /tmp/spotlight train "${FLAGS[@]}" $extra \
    --out "/tmp/variants/$label" --bench "/tmp/results/train_throughput_$label.json" \
    > "/tmp/results/train_$label.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  set +e
  wait "${pids[$i]}"
  echo "${labels[$i]}: train exited with $? ($(tail -n 1 "/tmp/variants/${labels[$i]}/train_log.csv" | cut -d, -f1) last step)"
  set -e
done
hashes=()
for label in "${labels[@]}"; do
  for f in /tmp/variants/"$label"/hash-*.f16.safetensors; do
    [ -f "$f" ] || continue
    mkdir -p /tmp/hashes && cp "$f" "/tmp/hashes/${label}.$(basename "$f")"
    hashes+=(--hash "$label=$f")
  done
  cp "/tmp/variants/$label/train_curves.csv" "/tmp/results/train_curves_$label.csv" 2>/dev/null || true
done
# shellcheck disable=SC2086
/tmp/spotlight eval retrieval --backend cuda "${hashes[@]}" --tokens 8192 --windows 2 --queries 64 \
  ${QUALITY_ARGS:-} --json /tmp/results/retrieval_quality.json 2>&1 | tail -n 45
# With GENERATE=1: each variant's group hash decodes a 3K-token Moby-Dick prompt greedily on CUDA
# (the fused decoder: hash_pack, score, select, sparse attend) and on the CPU (the mask path, the
# references), and dense on both, so the two backends' tokens can be compared.
if [ "${GENERATE:-0}" = 1 ]; then
  head -c 12000 .gpu/moby-dick.txt > /tmp/prompt.txt
  for label in "${labels[@]}"; do
    f="/tmp/variants/$label/hash-group.safetensors"
    [ -f "$f" ] || continue
    for backend in cuda cpu; do
      for attention in spotlight dense; do
        /tmp/spotlight generate --backend "$backend" --prompt-file /tmp/prompt.txt --max-tokens 48 \
          --temperature 0 --attention "$attention" --hash "$f" --dense-below 0 \
          > "/tmp/results/generate_${label}_${backend}_${attention}.txt" 2>&1 || true
        tail -n 4 "/tmp/results/generate_${label}_${backend}_${attention}.txt"
      done
    done
  done
fi
tar czf "$OUT/results.tgz" -C /tmp/results .
# The hash files come back as one tar in 16 MB parts: the device tool returns at most 8 files of
# under ~20 MB each, and one 256-bit hash is 24 MB. Rejoin: cat hashes.tar.part* | tar x
if [ -d /tmp/hashes ]; then
  tar cf - -C /tmp/hashes . | split -b 16M -d - "$OUT/hashes.tar.part"
fi
