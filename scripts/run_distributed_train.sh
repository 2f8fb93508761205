#!/usr/bin/env bash
# Data-parallel training with torchrun (one process per GPU; gloo on CPU).
#   scripts/run_distributed_train.sh NUM_PROCS -c configs/trn_bninception_jester.yaml --data-root ROOT [...]
# Multi-node: add torchrun's own rendezvous flags through TORCHRUN_ARGS, e.g.
#   TORCHRUN_ARGS="--nnodes 2 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint host0:29500"
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 NUM_PROCS fastvid-train-args..." >&2
  exit 2
fi
NPROC=$1
shift
# shellcheck disable=SC2086
exec torchrun --nproc_per_node "$NPROC" ${TORCHRUN_ARGS:---standalone} -m fastvid train "$@"
