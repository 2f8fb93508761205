#!/usr/bin/env bash
# Benchmark a config end to end and render the report.
# Usage: scripts/bench.sh CONFIG [OUT_DIR] [-- extra `fastvid bench` args, e.g. --checkpoint PATH]
#   env: BATCHES (default 1,16), BACKENDS (default eager,compile,aoti,onnx,trt), PRECISIONS
#        (default fp16 on a GPU, fp32 on CPU), ITERS (default 30), TRAIN=0 to skip the training bench,
#        LOADERS + DATA_ROOT to add the loader bench (e.g. LOADERS=dali,dali-cpu,torch).
# Records go to OUT_DIR/results.json (appended), then OUT_DIR/report.md and PNGs.
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,8p' "$0"; exit 2
fi
CONFIG="$1"; shift
OUT_DIR="reports/$(basename "${CONFIG%.*}")"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUT_DIR="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
FASTVID="${FASTVID:-fastvid}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    PRECISIONS="${PRECISIONS:-fp16}"
else
    PRECISIONS="${PRECISIONS:-fp32}"
fi
"$FASTVID" bench -c "$CONFIG" --batch "${BATCHES:-1,16}" --backends "${BACKENDS:-eager,compile,aoti,onnx,trt}" \
    --precision "$PRECISIONS" --iters "${ITERS:-30}" --out "$OUT_DIR" "$@"
if [ "${TRAIN:-1}" != "0" ]; then
    "$FASTVID" bench -c "$CONFIG" --backends none --train --iters "${ITERS:-30}" --out "$OUT_DIR" "$@"
fi
if [ -n "${LOADERS:-}" ]; then
    "$FASTVID" bench -c "$CONFIG" --backends none --loader "$LOADERS" --data-root "${DATA_ROOT:?set DATA_ROOT}" \
        --out "$OUT_DIR" "$@"
fi
"$FASTVID" report "$OUT_DIR"
