#!/usr/bin/env bash
# Stage 2 (cross-image mask consistency) from a stage-1 result, with torchrun on one node (8 GPUs).
#   STAGE1=runs/stage1/final.safetensors scripts/run_stage2.sh
# Extra arguments go to `ovseg train` (further --opts add to the one below).
set -euo pipefail
CONFIG=${CONFIG:-configs/ovsegmentor/pretrain_stage2.yml}
OUTPUT=${OUTPUT:-runs/stage2}
STAGE1=${STAGE1:-runs/stage1/final.safetensors}
exec torchrun --nproc_per_node="${NPROC:-8}" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m ovseg train --cfg "$CONFIG" --output "$OUTPUT" --opts "checkpoint.stage1_checkpoint=$STAGE1" "$@"
