#!/usr/bin/env bash
# Build validated inference engines from a checkpoint for every backend that works here.
# Usage: scripts/build_engine.sh CONFIG CHECKPOINT [OUT_DIR] [-- extra `fastvid build-engine` args]
#   env: BACKENDS (default: trt,aoti,onnx on a GPU, aoti,onnx on CPU), PRECISION (default fp16 on
#        a GPU, fp32 on CPU), BATCH (default 1), MAX_BATCH (default 16).
# Each engine is written as OUT_DIR/<checkpoint stem>.<backend>.<precision>.<ext> plus its .json
# (validation numbers). A backend that is unavailable is reported and skipped.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,7p' "$0"; exit 2
fi
CONFIG="$1"; CKPT="$2"; shift 2
OUT_DIR="$(dirname "$CKPT")"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUT_DIR="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
FASTVID="${FASTVID:-fastvid}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    BACKENDS="${BACKENDS:-trt,aoti,onnx}"; PRECISION="${PRECISION:-fp16}"
else
    BACKENDS="${BACKENDS:-aoti,onnx}"; PRECISION="${PRECISION:-fp32}"
fi
mkdir -p "$OUT_DIR"
STEM="$(basename "${CKPT%.*}")"
status=0
for backend in ${BACKENDS//,/ }; do
    echo "== $backend $PRECISION"
    if ! "$FASTVID" build-engine -c "$CONFIG" --checkpoint "$CKPT" --backend "$backend" \
            --precision "$PRECISION" --batch "${BATCH:-1}" --max-batch "${MAX_BATCH:-16}" \
            --out "$OUT_DIR/$STEM.$backend.$PRECISION" "$@"; then
        echo "   $backend: not built (see the message above)"; status=1
    fi
done
exit $status
