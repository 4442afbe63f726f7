#!/usr/bin/env bash
# Every GPU check of the training engine in one short run (for a machine with CUDA):
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
# 1. the CUDA-only tests (graph-captured step == eager step; stack == single runs on the GPU)
# 2. seconds per cell-epoch, K = 1, 3, 9, 27, eager/graph, fp32/bf16, for miga-conv then the rest
# 3. the paper grid's wall time and GPU utilisation (synthetic csi300-shaped store unless the
#    shared-data store is built in MIGA_HOME)
# Needs a venv with CUDA torch; figures go to OUT_DIR (default ./gpu-figures) and stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-figures}
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
nvidia-smi | tee "$OUT/nvidia-smi.txt"
$PY -m pytest -q -p no:cacheprovider tests/model/test_stack.py -k "graph or gpu" 2>&1 | tail -15 | tee "$OUT/tests.txt"
$PY benchmarks/bench_stack.py --models miga-conv --days 64 2>&1 | tee "$OUT/stack-miga-conv.txt"
$PY benchmarks/bench_stack.py --models miga-rec,miga-attn,tcn,lstm,transformer,moderntcn,mamba,master \
    --days 32 --ks 1,9,27 2>&1 | tee "$OUT/stack-others.txt"
$PY benchmarks/bench_stack.py --grid 2>&1 | tee "$OUT/grid.txt"
