#!/usr/bin/env bash
# Stage 1 under Slurm: one task per GPU, `ovseg train` reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and
# takes the first node of the allocation as the rendezvous (port from the job id, or MASTER_PORT).
# Nodes and GPUs per node are sbatch parameters (keep --ntasks-per-node equal to the GPUs per node):
#   sbatch scripts/run_slurm.sh                                            # 1 node x 8 GPUs
#   sbatch --nodes=4 scripts/run_slurm.sh                                  # 4 nodes x 8 GPUs
#   sbatch --nodes=2 --ntasks-per-node=4 --gres=gpu:4 scripts/run_slurm.sh # 2 nodes x 4 GPUs
#   sbatch -p PARTITION scripts/run_slurm.sh --opts data.batch_size=128    # arguments go to `ovseg train`
#SBATCH --job-name=ovseg-stage1
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=10
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${CONFIG:-configs/ovsegmentor/pretrain_stage1.yml}
OUTPUT=${OUTPUT:-runs/stage1}
srun --kill-on-bad-exit=1 ovseg train --cfg "$CONFIG" --output "$OUTPUT" "$@"
