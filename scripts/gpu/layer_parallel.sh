#!/usr/bin/env bash
# Hash training spread over the GPUs of one machine: layers are independent, so each GPU trains a
# contiguous range of layers (`spotlight train --layers a..b`, one process per GPU) and
# `spotlight hash merge` joins the files. Carry as for hash_quality.sh; TRAIN_FLAGS as there.
# LAYERS_FROM/LAYERS_TO: the layers trained (default 2..30); GPUS: default every visible GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
source scripts/gpu/home.sh
gpus="${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)}"
from="${LAYERS_FROM:-2}"
to="${LAYERS_TO:-30}"
n=$((to - from))
pids=()
for g in $(seq 0 $((gpus - 1))); do
  a=$((from + g * n / gpus))
  b=$((from + (g + 1) * n / gpus))
  [ "$a" -lt "$b" ] || continue
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES="$g" /tmp/spotlight train --backend cuda --recipe paper --layers "$a..$b" \
    --seed 0 ${TRAIN_FLAGS:-} --out "/tmp/lp/$g" > "/tmp/lp-$g.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
mkdir -p /tmp/lp-out
for layout in group faithful; do
  files=(/tmp/lp/*/hash-$layout.safetensors)
  [ -f "${files[0]}" ] || continue
  /tmp/spotlight hash merge "${files[@]}" --out "/tmp/lp-out/hash-$layout.safetensors"
done
# With SINGLE=1, the same layers in one process for the bit-for-bit comparison.
if [ "${SINGLE:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  /tmp/spotlight train --backend cuda --recipe paper --layers "$from..$to" --seed 0 ${TRAIN_FLAGS:-} \
    --out /tmp/lp-single > /tmp/lp-single.log 2>&1
  for f in /tmp/lp-out/hash-*.safetensors; do
    cmp "$f" "/tmp/lp-single/$(basename "$f")" && echo "$(basename "$f"): identical to one process"
  done
fi
tar czf "$OUT/results.tgz" -C /tmp lp-out $(cd /tmp && ls lp-*.log)
