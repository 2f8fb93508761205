#!/usr/bin/env bash
# GPU check in one call of at most 7 minutes on one cold H100/H200 (--quick: about 4 minutes
# cold, 2.5 on the same machine again), for a CUDA machine that has torch (+ triton,
# onnxruntime, pytest, PyYAML) but maybe not DALI, TensorRT, PyAV, click or matplotlib, and no
# package index. Steps in priority order, each in a slot (`python -m bench.gpu_check slots`):
#   tests_capture   pytest -m gpu on the step-capture and CUDA-graph tests (the only check that
#                   replayed steps equal eager ones);
#   dali            loader rows at steady state: torch, DALI on the GPU (then the data_wait of
#                   real training steps it feeds), DALI on the CPU, then the stage timings;
#   train_<model>   TRN-BNInception (batch 24), then TPN-SlowOnly-R50 (batch 8): bf16
#                   channels-last eager, the compiled step captured in a CUDA graph, the step
#                   captured alone, fp32 once (the baseline), then other dtypes and layouts;
#   infer_<model>   batch 1 eager fp32 / fp16, compile + CUDA graphs, eager + CUDA graphs, then
#                   batch 16, then the rest; ONNX Runtime, TensorRT, AOTInductor last;
#   tests_dali_gpu, tests_more, tests_aoti   the DALI GPU graph tests, the other gpu/trt/dali
#                   tests, and AOTInductor's cold CUDA build (tests/unit/test_engines.py) last;
#   report          report.md (+ PNGs when matplotlib imports).
# A step is stopped at the end of its slot (time a step leaves unused goes to the next); inside
# a step the driver starts a variant only when its expected time -- its own cold costs (cuDNN
# autotuning, Inductor compile, capture, pipeline builds) + its steady-state work, priors in
# bench/gpu_priors.yaml -- ends before the slot does; the others are recorded as skipped (time
# budget). `--plan` prints that schedule without running anything. Records are appended to
# OUT_DIR/results.json as each is measured, so a step stopped at its cap keeps what it measured.
# OUT_DIR ends up with at most 8 files, none in subfolders: results.json, report.md,
# gpu_check.log, gpu_tests.log and up to 4 PNGs. Existing records in OUT_DIR/results.json are
# kept (runs of parts add up).
#
# Usage: scripts/gpu_check.sh [OUT_DIR] [--quick] [--only tests,dali,train,infer]
#                             [--models trn_bninception,tpn_slowonly_r50] [--tests PATHS]
#                             [--smoke] [--plan [--cache cold|warm]]
#   OUT_DIR   default $OUT, else gpu_check_out
#   --plan    print the schedule this would run on a cold H100/H200 (every test group, variant
#             and loader row with its expected start and end, and what would be skipped); runs
#             nothing. --cache warm: Inductor's cache of an earlier run on the same machine
#   --smoke   tiny inputs on whatever device torch has: checks this script on a CPU; its
#             numbers mean nothing
#   --tests   run these test paths (-m "gpu or trt or dali") in the first test slot instead of
#             the test groups
# The NVDEC tests need H.264/HEVC/VP9 files and the GPU machine has no encoder: write them where
# PyAV is (`python tests/_media.py test_media` in the checkout, carried along) and they are found
# in ./test_media (or $FASTVID_TEST_MEDIA); without them those tests skip, saying why.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

OUT_DIR="" QUICK=0 SMOKE=0 PLAN=0 CACHE=cold ONLY="tests,dali,train,infer" MODELS="trn_bninception,tpn_slowonly_r50"
TESTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --smoke) SMOKE=1 ;;
        --plan) PLAN=1 ;;
        --cache) CACHE="${2:?--cache needs cold or warm}"; shift ;;
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

PY="${PYTHON:-$(command -v python || command -v python3)}"
# The checkout's packages without installing them (no package index there, and no egg-info here).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ $QUICK = 1 ]; then PRESET=quick; else PRESET=full; fi
[ $SMOKE = 1 ] && PRESET=smoke
if [ $PLAN = 1 ]; then
    exec "$PY" -m bench.gpu_check plan --preset "$PRESET" --models "$MODELS" --only "$ONLY" --cache "$CACHE"
fi
# The schedule (SLOTS=(name:seconds ...), TESTS_<group>=(pytest args)) from the driver: one
# source for this script, --plan and docs/gpu-check.md's table.
SLOT_DEFS="$("$PY" -m bench.gpu_check slots --preset "$PRESET")" || {
    echo "gpu_check.sh: $PY cannot run bench.gpu_check" >&2; exit 1; }
eval "$SLOT_DEFS"

OUT_DIR="${OUT_DIR:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
# One benchmark run id for every step, so that the report shows this check's records together
# (and none from an earlier check into the same folder).
export FASTVID_RUN_ID="${FASTVID_RUN_ID:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)-$$}"
START=$(date +%s)
: >"$LOG"
: >"$OUT_DIR/gpu_tests.log"
# Inductor's and Triton's caches outside OUT_DIR (which must stay small); a rerun on the same
# machine compiles from them.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/fastvid-inductor-cache}"

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
        timeout --signal="$sig" --kill-after=5 "$cap" "$@" >>"$STEP_LOG" 2>&1
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
say "slots: ${SLOTS[*]}"
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

run_tests() {  # run_tests SLOT PYTEST-ARGS...: pytest in that slot, output appended to gpu_tests.log
    local slot="$1" summary; shift
    if [ "$PYTEST" != 1 ]; then say "pytest is not installed: $slot skipped"; return 0; fi
    # SIGINT at the cap: pytest then stops and still prints its summary of what ran. Python
    # ignores SIGINT when it started ignored (a command run in the background), hence the
    # explicit handler.
    echo "===== $slot: pytest $*" >>"$OUT_DIR/gpu_tests.log"
    STEP_LOG="$OUT_DIR/gpu_tests.log" step "$slot" INT "$slot: pytest $* (gpu_tests.log)" \
        "$PY" -c 'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))' "$@" -rA -v -p no:cacheprovider -o console_output_style=classic
    summary=$(sed -n "/^===== $slot:/,\$p" "$OUT_DIR/gpu_tests.log" \
        | grep -E "^=+ .*(passed|failed|error|skipped|deselected|no tests ran).* =+$" | tail -n 1)
    say "   tests: ${summary:-no summary line (see gpu_tests.log)}"
    sed -n "/^===== $slot:/,\$p" "$OUT_DIR/gpu_tests.log" | grep -E "^(FAILED|ERROR) " | head -n 20 | tee -a "$LOG"
}

MEASURE=0
if [ "$CUDA" = 1 ] || [ $SMOKE = 1 ]; then MEASURE=1
else say "no CUDA device: nothing to measure (--smoke checks this script on a CPU)"; fi

FIRST_TESTS=1
for entry in "${SLOTS[@]}"; do
    slot="${entry%%:*}"
    case "$slot" in
        tests_*)
            wants tests || continue
            if [ -n "$TESTS" ]; then  # --tests: those paths, once, in the first test slot
                # shellcheck disable=SC2086  # TESTS is a list of paths
                [ $FIRST_TESTS = 1 ] && run_tests "$slot" $TESTS -m "gpu or trt or dali"
            else
                group="${slot#tests_}"
                eval "args=(\"\${TESTS_$group[@]}\")"
                run_tests "$slot" "${args[@]}"
            fi
            FIRST_TESTS=0 ;;
        dali)
            wants dali && [ $MEASURE = 1 ] || continue
            if [ "$DALI" = 1 ] && [ "$YAML" = 1 ]; then
                bench dali "loader rows (torch, DALI GPU + data_wait, DALI CPU, stages)" loader "$OUT_DIR"
            else
                say "nvidia.dali (or PyYAML) does not import: loader rows skipped (stage DALI: docs/gpu-check.md)"
            fi ;;
        train_*|infer_*)
            section="${slot%%_*}" model="${slot#*_}"
            wants "$section" && [ $MEASURE = 1 ] && has_model "$model" || continue
            bench "$slot" "$section bench $model" "$section" "$model" "$OUT_DIR" ;;
        report)
            [ -f "$OUT_DIR/results.json" ] || continue
            step report TERM "report" "$PY" - "$OUT_DIR" <<'EOF'
import sys
from bench.report import render_report
res = render_report(sys.argv[1], max_plots=4)  # + 4 other files: the 8 a remote machine returns
print("report:", res["markdown"], "plots:", ", ".join(p.name for p in res["plots"]) or "none")
EOF
            ;;
    esac
done

# What comes back from a remote machine: at most 8 files, no deeper than OUT_DIR/a/b/file.
find "$OUT_DIR" -maxdepth 1 -name '.results.*.tmp' -delete
files=$(find "$OUT_DIR" -type f | wc -l)
deep=$(find "$OUT_DIR" -mindepth 4 -type f | wc -l)
say "done in $(( $(date +%s) - START ))s: $OUT_DIR holds $files files ($(cd "$OUT_DIR" && ls | tr '\n' ' '))"
[ "$files" -le 8 ] && [ "$deep" -eq 0 ] || say "WARNING: over the 8-file / 2-folder limit of what comes back"
exit 0
