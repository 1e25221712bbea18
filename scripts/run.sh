#!/usr/bin/env bash
# Stage 1 on one node with torchrun (the original's run.sh: 8 GPUs). Extra arguments go to `ovseg train`.
#   scripts/run.sh                                     # 8 GPUs, the paper's stage-1 config
#   NPROC=1 scripts/run.sh --opts data.batch_size=64   # one GPU (or CPU)
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node1 scripts/run.sh   # on node1; NODE_RANK=1 on the second node
set -euo pipefail
CONFIG=${CONFIG:-configs/ovsegmentor/pretrain_stage1.yml}
OUTPUT=${OUTPUT:-runs/stage1}
exec torchrun --nproc_per_node="${NPROC:-8}" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m ovseg train --cfg "$CONFIG" --output "$OUTPUT" "$@"
