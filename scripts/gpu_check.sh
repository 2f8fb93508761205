#!/usr/bin/env bash
# GPU check in one call, within 6 minutes on one H100/H200 (--quick: 3 minutes), for a CUDA
# machine that has torch (+ torchvision, triton, onnxruntime, pytest) but maybe not DALI,
# TensorRT, PyAV, click or matplotlib, and no package index. Parts, in this order:
#   tests  pytest -m "gpu or trt or dali", full -rA output in OUT_DIR/gpu_tests.log;
#   dali   loader throughput, DALI on the GPU vs DALI on the CPU vs torch (when DALI imports);
#   train  training throughput: fp32 vs AMP fp16 / bf16 x channels-first / last (TRN, TPN);
#   infer  inference: eager fp32 / fp16, each replayed from CUDA graphs too, torch.compile
#          (also mode=reduce-overhead), ONNX Runtime, TensorRT, AOTInductor (last: its CUDA
#          compile takes ~2 min) at batch 1, 8 and 16 (TRN, TPN-SlowOnly), with achieved
#          TFLOP/s and % of the GPU's dense peak; cheap variants first, what no longer fits
#          in the slot is recorded as skipped;
#   then report.md (+ PNGs when matplotlib imports).
# Every step has a slot in one schedule; a step ends by the end of its slot (time a step leaves
# unused goes to the next), and the benchmarks start a variant only when it fits (the others
# are recorded as skipped: time budget). Records are appended to OUT_DIR/results.json as each
# is measured, so a step stopped at its cap keeps what it measured. OUT_DIR ends up with at
# most 8 files, none in subfolders: results.json, report.md, gpu_check.log, gpu_tests.log and
# up to 4 PNGs. Existing records in OUT_DIR/results.json are kept (runs of parts add up).
#
# Usage: scripts/gpu_check.sh [OUT_DIR] [--quick] [--only tests,dali,train,infer]
#                             [--models trn_bninception,tpn_slowonly_r50] [--tests PATHS]
#                             [--smoke]
#   OUT_DIR   default $OUT, else gpu_check_out
#   --smoke   tiny inputs on whatever device torch has: checks this script on a CPU; its
#             numbers mean nothing
#   --tests   the test paths pytest gets (default: tests)
# The NVDEC tests need H.264/HEVC/VP9 files and the GPU machine has no encoder: write them where
# PyAV is (`python tests/_media.py test_media` in the checkout, carried along) and they are found
# in ./test_media (or $FASTVID_TEST_MEDIA); without them those tests skip, saying why.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

OUT_DIR="" QUICK=0 SMOKE=0 ONLY="tests,dali,train,infer" MODELS="trn_bninception,tpn_slowonly_r50"
TESTS="tests"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --smoke) SMOKE=1 ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --only=*) ONLY="${1#*=}" ;;
        --models) MODELS="${2:?--models needs a list}"; shift ;;
        --models=*) MODELS="${1#*=}" ;;
        --tests) TESTS="${2:?--tests needs paths}"; shift ;;
        --tests=*) TESTS="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) [ -z "$OUT_DIR" ] || { echo "gpu_check.sh: one OUT_DIR only" >&2; exit 2; }; OUT_DIR="$1" ;;
    esac
    shift
done
for part in ${ONLY//,/ }; do
    case "$part" in tests|dali|train|infer) ;; *) echo "gpu_check.sh: --only: unknown part '$part' (tests, dali, train, infer)" >&2; exit 2 ;; esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
has_model() { [[ ",$MODELS," == *",$1,"* ]]; }

OUT_DIR="${OUT_DIR:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
# One benchmark run id for every step, so that the report shows this check's records together
# (and none from an earlier check into the same folder).
export FASTVID_RUN_ID="${FASTVID_RUN_ID:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)-$$}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
START=$(date +%s)
: >"$LOG"
# The checkout's packages without installing them (no package index there, and no egg-info here).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Inductor's and Triton's caches outside OUT_DIR (which must stay small); a rerun on the same
# machine compiles from them.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/fastvid-inductor-cache}"

# The schedule: seconds per slot, in order, from the start of this script (start-up counts).
# Sums: 350 s and 165 s; a stopped step's kill can add 5 s: under 6 and 3 minutes.
if [ $QUICK = 1 ]; then PRESET=quick; SLOTS=(tests:40 dali:25 train_trn_bninception:25 \
    train_tpn_slowonly_r50:15 infer_trn_bninception:30 infer_tpn_slowonly_r50:20 report:10)
else PRESET=full; SLOTS=(tests:60 dali:60 train_trn_bninception:55 train_tpn_slowonly_r50:35 \
    infer_trn_bninception:85 infer_tpn_slowonly_r50:45 report:10)
fi
[ $SMOKE = 1 ] && PRESET=smoke
slot_end() {  # slot_end NAME: when that slot ends (seconds since the epoch)
    local t=$START s
    for s in "${SLOTS[@]}"; do t=$((t + ${s#*:})); [ "${s%%:*}" = "$1" ] && { echo $t; return; }; done
    echo "gpu_check.sh: no slot $1" >&2; exit 2
}

say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
step() {  # step SLOT SIGNAL NAME CMD...: run until the slot's end; output to the log, or to
          # $STEP_LOG alone when that is set
    local slot="$1" sig="$2" name="$3"; shift 3
    local end cap rc
    end=$(slot_end "$slot"); cap=$((end - $(date +%s)))
    if [ $cap -lt 3 ]; then say "== $name: skipped, its slot has ended"; return 0; fi
    say "== $name (cap ${cap}s)"
    if [ -n "${STEP_LOG:-}" ]; then
        timeout --signal="$sig" --kill-after=5 "$cap" "$@" >"$STEP_LOG" 2>&1
        rc=$?
    else
        timeout --signal="$sig" --kill-after=5 "$cap" "$@" 2>&1 | tee -a "$LOG"
        rc=${PIPESTATUS[0]}
    fi
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "   $name: stopped at its ${cap}s cap"
    elif [ $rc -ne 0 ]; then say "   $name: exit code $rc (see gpu_check.log)"; else say "   $name: ok"; fi
    return 0
}
bench() {  # bench SLOT NAME ARGS...: bench.gpu_check, told to stop starting variants 3 s early
    local slot="$1" name="$2"; shift 2
    step "$slot" TERM "$name" "$PY" -m bench.gpu_check "$@" --preset "$PRESET" \
        --deadline "$(( $(slot_end "$slot") - 3 ))"
}

say "fastvid GPU check ($PRESET preset; parts: $ONLY; models: $MODELS) -> $OUT_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader 2>&1 | sed 's/^/  nvidia-smi: /' | tee -a "$LOG"
ENV_INFO="$("$PY" - <<'EOF' 2>&1
import importlib.util, os, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "| cpus", os.cpu_count())
def found(m):
    try:
        return importlib.util.find_spec(m) is not None
    except (ImportError, ValueError):
        return False
for m in ("torchvision", "triton", "onnxruntime", "torch_tensorrt", "nvidia.dali", "av", "pytest",
          "click", "yaml", "matplotlib", "pynvml"):
    print(f"  {m}: {'yes' if found(m) else 'no'}")
try:
    import nvidia.dali
    dali = True
except Exception as exc:  # a staged DALI that does not load is worth a line in the log
    dali = False
    if found("nvidia.dali"):
        print("  nvidia.dali does not import:", type(exc).__name__, exc)
print("GPU_CHECK_CUDA=%d GPU_CHECK_DALI=%d GPU_CHECK_PYTEST=%d GPU_CHECK_YAML=%d" % (
    torch.cuda.is_available(), dali, found("pytest"), found("yaml")))
EOF
)"
echo "$ENV_INFO" | grep -v '^GPU_CHECK_' | tee -a "$LOG"
flag() { echo "$ENV_INFO" | grep -o "$1=[01]" | tail -n 1 | cut -d= -f2; }
CUDA=$(flag GPU_CHECK_CUDA) DALI=$(flag GPU_CHECK_DALI) PYTEST=$(flag GPU_CHECK_PYTEST) YAML=$(flag GPU_CHECK_YAML)
if [ "${CUDA:-}" != 1 ] && [ "${CUDA:-}" != 0 ]; then say "python/torch did not start: $PY"; exit 1; fi

if [ -z "${FASTVID_TEST_MEDIA:-}" ] && [ -d "$ROOT/test_media" ]; then
    export FASTVID_TEST_MEDIA="$ROOT/test_media"
fi
say "test media for the NVDEC tests: ${FASTVID_TEST_MEDIA:-none (those tests skip)}"

if wants tests; then
    if [ "$PYTEST" = 1 ]; then
        # SIGINT at the cap: pytest then stops and still prints its summary of what ran. Python
        # ignores SIGINT when it started ignored (a command run in the background), hence the
        # explicit handler.
        # shellcheck disable=SC2086  # TESTS is a list of paths
        STEP_LOG="$OUT_DIR/gpu_tests.log" step tests INT "pytest -m 'gpu or trt or dali' (gpu_tests.log)" \
            "$PY" -c 'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))' $TESTS -m "gpu or trt or dali" -rA -v -p no:cacheprovider \
            -o console_output_style=classic
        summary=$(grep -E "^=+ .*(passed|failed|error|skipped|deselected|no tests ran).* =+$" \
            "$OUT_DIR/gpu_tests.log" | tail -n 1)
        say "   tests: ${summary:-no summary line (see gpu_tests.log)}"
        grep -E "^(FAILED|ERROR) " "$OUT_DIR/gpu_tests.log" | head -n 20 | tee -a "$LOG"
    else
        say "pytest is not installed: GPU tests skipped"
    fi
fi

MEASURE=0
if [ "$CUDA" = 1 ] || [ $SMOKE = 1 ]; then MEASURE=1
else say "no CUDA device: nothing to measure (--smoke checks this script on a CPU)"; fi

if wants dali && [ $MEASURE = 1 ]; then
    if [ "$DALI" = 1 ] && [ "$YAML" = 1 ]; then
        bench dali "loader bench (DALI GPU / DALI CPU / torch)" loader "$OUT_DIR"
    else
        say "nvidia.dali (or PyYAML) does not import: loader bench skipped (stage DALI: see README)"
    fi
fi
for section in train infer; do
    wants $section && [ $MEASURE = 1 ] || continue
    for model in trn_bninception tpn_slowonly_r50; do
        has_model $model && bench "${section}_$model" "$section bench $model" $section $model "$OUT_DIR"
    done
done

if [ -f "$OUT_DIR/results.json" ]; then
    step report TERM "report" "$PY" - "$OUT_DIR" <<'EOF'
import sys
from bench.report import render_report
res = render_report(sys.argv[1], max_plots=4)  # + 4 other files: the 8 a remote machine returns
print("report:", res["markdown"], "plots:", ", ".join(p.name for p in res["plots"]) or "none")
EOF
fi

# What comes back from a remote machine: at most 8 files, no deeper than OUT_DIR/a/b/file.
find "$OUT_DIR" -maxdepth 1 -name '.results.*.tmp' -delete
files=$(find "$OUT_DIR" -type f | wc -l)
deep=$(find "$OUT_DIR" -mindepth 4 -type f | wc -l)
say "done in $(( $(date +%s) - START ))s: $OUT_DIR holds $files files ($(cd "$OUT_DIR" && ls | tr '\n' ' '))"
[ "$files" -le 8 ] && [ "$deep" -eq 0 ] || say "WARNING: over the 8-file / 2-folder limit of what comes back"
exit 0
