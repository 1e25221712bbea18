#!/usr/bin/env bash
# Stage 2 under Slurm (see run_slurm.sh for nodes and GPUs):
#   STAGE1=runs/stage1/final.safetensors sbatch scripts/run_slurm_stage2.sh
#SBATCH --job-name=ovseg-stage2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=10
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${CONFIG:-configs/ovsegmentor/pretrain_stage2.yml}
OUTPUT=${OUTPUT:-runs/stage2}
STAGE1=${STAGE1:-runs/stage1/final.safetensors}
srun --kill-on-bad-exit=1 ovseg train --cfg "$CONFIG" --output "$OUTPUT" --opts "checkpoint.stage1_checkpoint=$STAGE1" "$@"
