#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG GPUS [test.py args]
# Ranks split the images / videos (strided) and gather results: numbers equal a one-process run.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults: 1 node, rank 0, 127.0.0.1, 29501).
# Without CUDA the processes run on CPU and communicate through gloo (README, Training).
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29501}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
cd "$(dirname "$0")/.."
PYTHONPATH="$(pwd):${PYTHONPATH:-}" exec python -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    tools/test.py "$CONFIG" --launcher pytorch "$@"
