#!/usr/bin/env bash
# The GPU training figures of BENCHMARKS.md (about 12 minutes on one H100: split it over two calls):
# stage 1 and stage 2 at the paper's per-GPU batch of 256, eager vs train.compile (image and text encoders,
# heads, entity decoder), and a kernel profile of the compiled stage-1 step. One JSON line per benchmark; logs in ${OUT:-.}.
#   bash benchmarks/gpu_suite.sh
set -u
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1
B=benchmarks/bench_train.py
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
run() { local name=$1; shift; timeout "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? $(grep '^{' "$OUT/$name.log" | tail -1)"; }
run s1_eager_b256 90 python $B --device cuda --stage 1 --batch 256 --steps 8
run s1_compile_b256 300 python $B --device cuda --stage 1 --batch 256 --steps 10 --compile --profile 40
run s2_eager_b256 80 python $B --device cuda --stage 2 --batch 256 --steps 8
run s2_compile_b256 260 python $B --device cuda --stage 2 --batch 256 --steps 8 --compile
