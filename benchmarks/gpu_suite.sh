#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one run (<= 10 minutes on one H100): training steps eager vs compiled,
# a kernel profile, batch 256, stage 2. Prints one JSON line per benchmark; full logs under ${OUT:-.}.
#   bash benchmarks/gpu_suite.sh
set -u
OUT=${OUT:-.}
B=benchmarks/bench_train.py
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run() { local name=$1; shift; timeout "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? $(grep '^{' "$OUT/$name.log" | tail -1)"; }
run s1_eager_b128 150 python $B --device cuda --stage 1 --batch 128 --steps 10 --profile 30
run s1_compile_b128 200 python $B --device cuda --stage 1 --batch 128 --steps 10 --compile
run s1_eager_b256 120 python $B --device cuda --stage 1 --batch 256 --steps 8
run s2_eager_b128 100 python $B --device cuda --stage 2 --batch 128 --steps 8 --profile 20
