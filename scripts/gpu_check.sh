#!/usr/bin/env bash
# GPU check in one command, for a CUDA machine that has torch (+ torchvision, triton, onnxruntime)
# but maybe not DALI, TensorRT, click, PyYAML or matplotlib, and no internet:
#   1. the GPU-marked tests (pytest -m gpu), when pytest is installed;
#   2. training throughput: fp32 vs AMP fp16 / bf16, channels-first vs channels-last (TRN, TPN);
#   3. inference: eager vs torch.compile vs AOTInductor (+ ONNX Runtime / TensorRT when they
#      work there) at batch 1 and 16, fp32 baseline and fp16, for TRN and TPN-SlowOnly;
#   4. the DALI loader benchmark, only when `import nvidia.dali` works: the issue-17 setting
#      (Jester-size 176x100 JPEG frames, TRN config, 8 x 224 crops, batch 24), every backend at
#      1, 2, 4, ... all cores, the per-stage breakdown and data_wait of 20 real training steps;
#   5. report.md (+ PNGs when matplotlib is there).
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default $OUT, else reports/gpu). Each step has its own
# time cap so the whole check ends within ~10 minutes; a step that runs out is logged and skipped.
# The NVDEC tests need H.264/HEVC/VP9 files and this machine has no encoder: write them where
# PyAV is (`python tests/_media.py test_media` in the checkout) and they are found in
# ./test_media (or $FASTVID_TEST_MEDIA).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${1:-${OUT:-reports/gpu}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
PY="${PYTHON:-$(command -v python || command -v python3)}"
START=$(date +%s)
: >"$LOG"

say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS CMD...: run with a time cap, keep going on failure
    local name="$1" cap="$2"; shift 2
    say "== $name (cap ${cap}s)"
    timeout --signal=TERM --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "   $name: stopped at the ${cap}s cap"; \
    elif [ $rc -ne 0 ]; then say "   $name: exit code $rc (see $LOG)"; else say "   $name: ok"; fi
    return 0
}

# The package from this working tree, without touching dependencies (there is no internet).
if ! "$PY" -c "import fastvid, engines, bench" 2>/dev/null; then
    if ! "$PY" -m pip install --no-deps --no-build-isolation -q -e . >>"$LOG" 2>&1; then
        say "pip install -e . failed; using PYTHONPATH=$ROOT"
    fi
    "$PY" -c "import fastvid" 2>/dev/null || export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
for m in ("torchvision", "triton", "onnxruntime", "torch_tensorrt", "nvidia.dali", "pytest", "click",
          "yaml", "matplotlib", "pynvml"):
    try:
        found = importlib.util.find_spec(m) is not None
    except (ImportError, ValueError):
        found = False
    print(f"  {m}: {'yes' if found else 'no'}")
EOF

if [ -z "${FASTVID_TEST_MEDIA:-}" ] && [ -d "$ROOT/test_media" ]; then
    export FASTVID_TEST_MEDIA="$ROOT/test_media"
fi
say "test media for the NVDEC tests: ${FASTVID_TEST_MEDIA:-none (those tests skip)}"

# The benchmark steps are bench/gpu_check.py (library API, argparse: no click/PyYAML needed).
# Each call appends its records to OUT_DIR/results.json, so a step stopped by its cap keeps what
# the others measured.
DRIVER=("$PY" -m bench.gpu_check)

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if "$PY" -c "import pytest" 2>/dev/null; then
        step "pytest -m gpu" 180 "$PY" -m pytest tests -m "gpu or trt" -q -p no:cacheprovider \
            --junitxml="$OUT_DIR/gpu_tests.xml"
        grep -E "passed|failed|error|skipped" "$LOG" | tail -n 1 | tee -a "$OUT_DIR/gpu_tests.txt"
    else
        say "pytest is not installed: GPU tests skipped"
    fi
    step "train bench TRN" 60 "${DRIVER[@]}" train trn_bninception "$OUT_DIR"
    step "train bench TPN" 60 "${DRIVER[@]}" train tpn_slowonly_r50 "$OUT_DIR"
    step "inference bench TRN" 150 "${DRIVER[@]}" infer trn_bninception "$OUT_DIR"
    step "inference bench TPN" 150 "${DRIVER[@]}" infer tpn_slowonly_r50 "$OUT_DIR"
else
    say "no CUDA device: nothing to measure on GPU"
fi

if "$PY" -c "import nvidia.dali, click, yaml" 2>/dev/null; then
    DATA="$(mktemp -d -t fastvid_gpu_data.XXXXXX)"
    step "synthetic dataset" 60 "$PY" -m fastvid data synth "$DATA" --kind frames --classes 8 --train 320 \
        --val 32 --frames 16 --size 176x100
    if [ -f "$DATA/train_videofolder.txt" ]; then
    # threads: torch DataLoader workers / DALI CPU threads; stages and data_wait at all cores
    # (data_wait only with CUDA: 20 TRN steps at 224 px take minutes on CPU cores)
    TRAIN_STEPS=0
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && TRAIN_STEPS=20
    step "loader bench" 300 "$PY" -m fastvid bench -c configs/trn_bninception_jester.yaml \
        --data-root "$DATA" --loader dali,dali-cpu,torch --loader-threads auto --loader-batches 10 \
        --loader-stages --loader-train-steps "$TRAIN_STEPS" --train-batch 24 --out "$OUT_DIR"
    else
        say "no synthetic dataset: loader bench skipped"
    fi
    rm -rf "$DATA"
else
    say "nvidia.dali (or click/PyYAML) not importable: loader bench skipped"
fi

"$PY" - "$OUT_DIR" <<'EOF' 2>&1 | tee -a "$LOG"
import sys
from bench.report import render_report
res = render_report(sys.argv[1])
print("report:", res["markdown"], "plots:", ", ".join(p.name for p in res["plots"]) or "none")
EOF
say "done: $OUT_DIR (results.json, report.md, PNGs, gpu_check.log)"
