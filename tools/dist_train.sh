#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults: 1 node, rank 0, 127.0.0.1, 29500).
# On GPUs it trains under DeepSpeed ZeRO-2, as the original's launch does (--deepspeed auto, unless
# --deepspeed is given: 'none' opts out to AMP + DDP); without CUDA the processes run on CPU and
# communicate through gloo (README, Training).
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
DEEPSPEED=(--deepspeed auto)
for arg in "$@"; do
    case "$arg" in --deepspeed|--deepspeed=*) DEEPSPEED=() ;; esac
done
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
cd "$(dirname "$0")/.."
PYTHONPATH="$(pwd):${PYTHONPATH:-}" exec python -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    tools/train.py "$CONFIG" --launcher pytorch "${DEEPSPEED[@]}" "$@"
