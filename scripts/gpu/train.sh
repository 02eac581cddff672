#!/usr/bin/env bash
# Trains the default model's hash on the GPU machine and evaluates it, in three calls
# (after `prepare.sh`; see scripts/gpu/README.md):
#   STAGE=setup   carry [".gpu"], then [".gpu1"] (two calls: 64 MiB each) checks the carries arrived
#   STAGE=train   carry [".gpu2"]           joins the model, measures a few steps, then trains for at
#                                           most TRAIN_SECONDS (killed with SIGKILL at the limit —
#                                           the next stage resumes from the last checkpoint)
#   STAGE=finish  carry []                  resumes to the last step, then `eval retrieval`
#   STAGE=full    carry []                  (after train) a run in its own RUN dir: killed with
#                                           SIGKILL after KILL_AFTER seconds, resumed to STEPS,
#                                           then `eval retrieval` — the resume is part of the record
# The run directory stays on the warm machine between calls; results are copied to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?run this through the device tool}"
STAGE="${STAGE:-train}"
RUN="${RUN:-/tmp/spotlight-train-run}"
# The full recipe, except steps: the time budget decides them (below).
FLAGS=(--backend cuda --seq-len 4096 --queries 1024 --pairs 1024 --checkpoint-every 20 --seed 0)
# TRAIN_ARGS adds flags (e.g. "--near-fraction 0.5"); they enter the run's config, so a resume
# must be given the same ones.
# shellcheck disable=SC2206
FLAGS+=(${TRAIN_ARGS:-})

if [ "$STAGE" = setup ]; then
  ls -la .gpu .gpu1
  exit 0
fi

source scripts/gpu/home.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ -n "${STEPS:-}" ]; then
  echo "$STEPS" > /tmp/train_steps
fi
if [ ! -f /tmp/train_steps ]; then
  echo "== probe: 6 full-size steps (includes kernel compilation, so it overestimates)"
  /tmp/spotlight train "${FLAGS[@]}" --steps 6 --out /tmp/probe --bench "$OUT/train_probe.json" 2>&1 | tail -n 3
  python3 - "$OUT/train_probe.json" "${TRAIN_BUDGET:-800}" > /tmp/train_steps <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
per_step = d["capture_s_per_step"] + d["train_s_per_step"]
print(max(50, min(3000, int(float(sys.argv[2]) / per_step))))
PY
fi
STEPS="$(cat /tmp/train_steps)"
echo "== training $STEPS steps into $RUN"

# At most 8 files come back from a call: small results travel as one tarball.
collect() {
  mkdir -p /tmp/results
  cp "$RUN"/train_log.csv "$RUN"/train_curves.csv "$RUN"/train_*.png /tmp/results/ 2>/dev/null || true
  cp "$OUT"/*.json /tmp/results/ 2>/dev/null || true
  tar czf "$OUT/results.tgz" -C /tmp/results .
}

if [ "$STAGE" = train ]; then
  set +e
  timeout -s KILL "${TRAIN_SECONDS:-480}" /tmp/spotlight train "${FLAGS[@]}" --steps "$STEPS" --out "$RUN" \
    --bench "$OUT/train_throughput_part1.json" 2>&1 | tail -n 5
  echo "train exited with ${PIPESTATUS[0]} (137 = killed at the time limit; the next stage resumes)"
  set -e
  ls -la "$RUN"
  tail -n 2 "$RUN/train_log.csv"
  collect
  exit 0
fi

if [ "$STAGE" = full ]; then
  set +e
  timeout -s KILL "${KILL_AFTER:-150}" /tmp/spotlight train "${FLAGS[@]}" --steps "$STEPS" --out "$RUN" 2>&1 | tail -n 2
  echo "first part exited with ${PIPESTATUS[0]} (137 = SIGKILL); checkpoint step: $(tail -n 1 "$RUN/train_log.csv" | cut -d, -f1) logged"
  set -e
fi

# STAGE=finish (and the rest of full)
/tmp/spotlight train "${FLAGS[@]}" --steps "$STEPS" --out "$RUN" --bench "$OUT/train_throughput.json" 2>&1 | tail -n 5
cp "$RUN"/hash-faithful.f16.safetensors "$RUN"/hash-group.f16.safetensors "$OUT"/
# Evaluated: the f16 files that are kept in the repository.
/tmp/spotlight eval retrieval --backend cuda --hash "$RUN/hash-faithful.f16.safetensors" \
  --hash "$RUN/hash-group.f16.safetensors" --tokens 8192 --windows 2 --queries 64 \
  --json /tmp/results/retrieval_quality.json 2>&1 | tail -n 40
collect
