#!/usr/bin/env bash
# The main job end to end on a synthetic dataset: synth -> train TRN -> eval -> engine -> bench -> reports
# (the training run: curves + confusion matrix; the bench: tables + plots).
# CPU: about 5 minutes on 2 idle cores (4.5 min measured), several times that when other jobs
# share the cores; training takes most of it. GPU (when torch sees one): the same commands run on it.
#   scripts/demo.sh [OUT_DIR]     (default demo_out)
set -euo pipefail
OUT=${1:-demo_out}
CFG=${DEMO_CONFIG:-configs/demo_trn_synth.yaml}
EPOCHS=${DEMO_EPOCHS:-}
mkdir -p "$OUT"
START=$SECONDS
step() { printf '\n== [%ds] %s\n' "$((SECONDS - START))" "$*"; }

step "1/6 synthetic Jester-layout dataset -> $OUT/data"
if [[ ! -f "$OUT/data/train_videofolder.txt" ]]; then
  fastvid data synth "$OUT/data" --kind frames --classes 4 --train 96 --val 32 --frames 16 --size 80x80 --seed 0
fi

step "2/6 train TRN-BNInception ($CFG)"
# A progress bar per epoch (batches, loss, videos/s) and one line per finished epoch.
fastvid train -c "$CFG" --data-root "$OUT/data" --work-dir "$OUT/run" --resume auto \
  ${EPOCHS:+--epochs "$EPOCHS"}

step "3/6 evaluate best.pt (eval.json in the run dir: its report draws the confusion matrix)"
fastvid eval -c "$CFG" --data-root "$OUT/data" --checkpoint "$OUT/run/best.pt" \
  --out "$OUT/run/eval.json" --save-scores "$OUT/run/scores.npy"

step "4/6 build an engine with the best backend available"
# engines.auto_backend is what `build-engine --backend auto` picks: on a GPU trt, aoti, onnx;
# on a CPU openvino (when installed), aoti, onnx.
read -r BACKEND EXT < <(python - <<'PY'
import engines
from engines.backends import engine_backend
name = engines.auto_backend()
print(name, engine_backend(name).extension.lstrip("."))
PY
)
[[ -n "${BACKEND:-}" ]] || { echo "no engine backend available" >&2; exit 1; }
fastvid build-engine -c "$CFG" --checkpoint "$OUT/run/best.pt" --backend "$BACKEND" \
  --batch 1 --max-batch 8 --out "$OUT/engine/trn.$EXT"
fastvid eval -c "$CFG" --data-root "$OUT/data" --engine "$OUT/engine/trn.$EXT" --out "$OUT/eval_engine.json"

step "5/6 bench at batch 1 (eager vs $BACKEND)"
fastvid bench -c "$CFG" --checkpoint "$OUT/run/best.pt" --engine "$OUT/engine/trn.$EXT" \
  --batch 1 --backends "eager,$BACKEND" --iters 20 --out "$OUT/bench"

step "6/6 reports: the training run, then the bench (\`fastvid report $OUT/bench --all\` lists earlier bench runs too)"
fastvid report "$OUT/run"
fastvid report "$OUT/bench"
echo
echo "done in $((SECONDS - START)) s: $OUT/run/eval.json, $OUT/engine/"
echo "training report (loss, accuracy, lr, speed, confusion matrix): $OUT/run/report.md"
echo "bench report (tables and plots):                              $OUT/bench/report.md"
