#!/usr/bin/env bash
# Hash quality like for like on the GPU machine, after prepare.sh and two calls carrying .gpu, then
# .gpu1 (`ls .gpu .gpu1`). Every stage scores on held-out text (Moby-Dick; training reads the State
# of the Union addresses and Austen) against the oracle of the same selection granularity, with the
# random linear hash of the same selection as the line to cross (heldout_baselines.csv).
#
#   STAGE=sweep  (carry .gpu2)  recipe variants side by side in ONE `spotlight train` on a few
#                layers (one capture of the frozen model per step for all of them):
#                VARIANTS="LABEL:FLAGS;LABEL:FLAGS" (each FLAGS added to --recipe paper's).
#                A 4-step probe measures the step time first; STEPS = TRAIN_BUDGET / step time.
#   STAGE=final  (carry [])     one recipe (FINAL_FLAGS) on LAYERS (default 2..30), both layouts;
#                killed at TRAIN_SECONDS, a second call with the same settings resumes it.
#   STAGE=eval   (carry [])     `eval retrieval` of the final hashes (and the shipped one) at 4K and
#                8K windows, the linear hash at 1-10 × head_dim bits with both selections.
# Results come back in $OUT as results.tgz; the f16 hash files as hashes.tar.part* (16 MB parts).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
STAGE="${STAGE:?sweep, final or eval}"
source scripts/gpu/home.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p /tmp/results
rm -rf /tmp/hashes  # a warm machine keeps /tmp: send back only this stage's hashes
EVAL=(--eval-tokens 8192 --eval-windows 2 --eval-queries 32 --eval-budget 0.02)

# STEPS from a probe's steady step time (the JSON's all_runs_steady_s_per_step).
steps_for() {
  python3 - "$1" "$2" "${3:-100}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
budget, every = float(sys.argv[2]), int(sys.argv[3])
steps = int(budget / d["all_runs_steady_s_per_step"]) // every * every
print(max(every, min(8000, steps)))
PY
}

# Copies a run directory's logs, plots and f16 hashes into the results (prefix: the run's name).
collect_run() {
  local dir="$1" name="$2"
  for f in "$dir"/*.csv "$dir"/*.png; do
    [ -f "$f" ] && cp "$f" "/tmp/results/${name}.$(basename "$f")"
  done
  for f in "$dir"/hash-*.f16.safetensors; do
    [ -f "$f" ] || continue
    mkdir -p /tmp/hashes && cp "$f" "/tmp/hashes/${name}.$(basename "$f")"
  done
}

send_back() {
  tar czf "$OUT/results.tgz" -C /tmp/results .
  if [ -d /tmp/hashes ]; then
    tar cf - -C /tmp/hashes . | split -b 16M -d - "$OUT/hashes.tar.part"
  fi
}

if [ "$STAGE" = sweep ]; then
  : "${VARIANTS:?LABEL:FLAGS;LABEL:FLAGS...}"
  LAYERS="${LAYERS:-4,14,24}"
  EVERY="${EVAL_EVERY:-100}"
  COMMON=(--backend cuda --recipe paper --layers "$LAYERS" --layout "${LAYOUT:-both}" --seed 0
    --checkpoint-every "$EVERY")
  V=()
  IFS=';' read -ra specs <<< "$VARIANTS"
  for spec in "${specs[@]}"; do V+=(--variant "$spec"); done
  echo "== probe: 4 steps of every variant together"
  /tmp/spotlight train "${COMMON[@]}" "${V[@]}" --steps 4 --out /tmp/sweep-probe \
    --bench /tmp/results/sweep_probe.json 2>&1 | tail -n 2
  STEPS="${STEPS:-$(steps_for /tmp/results/sweep_probe.json "${TRAIN_BUDGET:-380}" "$EVERY")}"
  echo "== sweep: $STEPS steps on layers $LAYERS"
  rm -rf /tmp/sweep
  set +e
  timeout -s KILL "${TRAIN_SECONDS:-500}" /tmp/spotlight train "${COMMON[@]}" "${V[@]}" \
    --steps "$STEPS" --eval-every "$EVERY" "${EVAL[@]}" --out /tmp/sweep \
    --bench /tmp/results/sweep_throughput.json > /tmp/results/sweep.log 2>&1
  echo "train exited with $? (137: killed at TRAIN_SECONDS)"
  set -e
  tail -n 3 /tmp/results/sweep.log
  cp /tmp/sweep/*.csv /tmp/sweep/*.png /tmp/results/ 2>/dev/null || true
  for spec in "${specs[@]}"; do
    label="${spec%%:*}"
    collect_run "/tmp/sweep/$label" "$label"
    echo "$label: $(tail -n 2 "/tmp/sweep/$label/heldout.csv" | tr '\n' ' ')"
  done
  cat /tmp/sweep/heldout_baselines.csv
  send_back
  exit 0
fi

if [ "$STAGE" = final ]; then
  LAYERS="${LAYERS:-2..30}"
  EVERY="${EVAL_EVERY:-200}"
  # shellcheck disable=SC2206
  FLAGS=(--backend cuda --recipe paper --layers "$LAYERS" --layout both --seed 0
    --checkpoint-every 50 ${FINAL_FLAGS:-})
  if [ -z "${STEPS:-}" ]; then
    /tmp/spotlight train "${FLAGS[@]}" --steps 4 --out /tmp/final-probe \
      --bench /tmp/results/final_probe.json 2>&1 | tail -n 2
    STEPS="$(steps_for /tmp/results/final_probe.json "${TRAIN_BUDGET:-420}" "$EVERY")"
  fi
  echo "== final: $STEPS steps on layers $LAYERS (${FINAL_FLAGS:-})"
  set +e
  timeout -s KILL "${TRAIN_SECONDS:-520}" /tmp/spotlight train "${FLAGS[@]}" --steps "$STEPS" \
    --eval-every "$EVERY" "${EVAL[@]}" --out /tmp/final \
    --bench /tmp/results/final_throughput.json > /tmp/results/final.log 2>&1
  echo "train exited with $? (137: killed at TRAIN_SECONDS; the same call again resumes)"
  set -e
  tail -n 3 /tmp/results/final.log
  collect_run /tmp/final final
  tail -n 4 /tmp/final/heldout.csv || true
  send_back
  exit 0
fi

if [ "$STAGE" = eval ]; then
  hashes=(--hash "final-faithful=/tmp/final/hash-faithful.f16.safetensors"
    --hash "final-group=/tmp/final/hash-group.f16.safetensors")
  for f in models/hash/*.safetensors; do
    [ -f "$f" ] && hashes+=(--hash "shipped-$(basename "$f" .safetensors)=$f")
  done
  for tokens in ${EVAL_TOKENS:-4096 8192}; do
    # shellcheck disable=SC2086
    /tmp/spotlight eval retrieval --backend cuda "${hashes[@]}" --tokens "$tokens" --windows 2 \
      --queries 64 --linear-bits 64,128,320,640 --budgets 0.02,0.05,0.1 --no-untrained \
      ${QUALITY_ARGS:-} --json "/tmp/results/retrieval_quality_${tokens}.json" 2>&1 | tail -n 30
  done
  # FIDELITY=ppl (or more tasks): the final group hash decoding, against dense and the shipped hash.
  if [ -n "${FIDELITY:-}" ]; then
    /tmp/spotlight eval fidelity --backend cuda --hash /tmp/final/hash-group.f16.safetensors \
      --tasks "$FIDELITY" ${FIDELITY_ARGS:-} --json /tmp/results/fidelity_final.json 2>&1 | tail -n 30
  fi
  send_back
  exit 0
fi
echo "STAGE=$STAGE: sweep, final or eval" >&2
exit 2
