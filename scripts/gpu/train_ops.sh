#!/usr/bin/env bash
# Hash training on the custom CubeCL ops vs the same math in Burn tensor ops, on the H200, in two
# stages (after `prepare.sh`; see scripts/gpu/README.md, "Training ops"):
#   STAGE=synthetic (carry .gpu, .gpu1): `spotlight bench train` (SYNTHETIC q/k, 30 layers of
#     SmolLM2's shape, 4096 tokens, 1024 queries × 1024 pairs) with --ops custom, tensor-ops, then
#     custom again (run-to-run spread), and the PyTorch peer of the same step
#     → $OUT/train_ops_{custom,tensor-ops,custom2}.json, train_ops_torch.json
#   STAGE=model (carry .gpu2): the real model, `spotlight train` for STEPS steps with each ops
#     choice from the same seed; the per-layer loss curves must agree → $OUT/curves.tgz + summary
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
case "${STAGE:-synthetic}" in
synthetic)
  source scripts/gpu/bin.sh
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  for ops in custom tensor-ops custom2; do
    /tmp/spotlight bench train --backend cuda --ops "${ops%2}" --out "$OUT/train_ops_$ops.json" 2>&1 | tail -n 3
  done
  python3 benches/peers/train_torch.py --ours "$OUT/train_ops_custom.json" --out "$OUT/train_ops_torch.json" | tail -n 2
  ;;
model)
  source scripts/gpu/home.sh
  for ops in custom tensor-ops; do
    /tmp/spotlight train --backend cuda --seq-len 4096 --queries 1024 --pairs 1024 --seed 0 \
      --checkpoint-every 1000 --steps "${STEPS:-60}" --ops "$ops" --out "/tmp/train_$ops" \
      --bench "/tmp/train_$ops/throughput.json" 2>&1 | tail -n 2
  done
  python3 scripts/compare_train_logs.py /tmp/train_custom/train_log.csv /tmp/train_tensor-ops/train_log.csv \
    > "$OUT/train_ops_curves.json"
  cat "$OUT/train_ops_curves.json"
  mkdir -p /tmp/curves
  for ops in custom tensor-ops; do
    cp "/tmp/train_$ops/train_log.csv" "/tmp/curves/train_log_$ops.csv"
    cp "/tmp/train_$ops/throughput.json" "/tmp/curves/throughput_$ops.json"
  done
  tar czf "$OUT/curves.tgz" -C /tmp/curves .
  ;;
*)
  echo "STAGE must be synthetic or model" >&2
  exit 2
  ;;
esac
