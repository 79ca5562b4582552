#!/usr/bin/env bash
# What does ssmax_tiny do on this machine's GPU? The checks that need one, in about 8 minutes on one H100:
#   bash bench/gpu_check.sh          (make gpu-check; DEV=AMD bash bench/gpu_check.sh to choose the device)
# 1. the core tests on the GPU (tinygrad's renderer, compiler and tensor cores there, against float64);
# 2. make lm's training step in float32 and bfloat16, paired with PyTorch's on the same GPU where a CUDA build of
#    PyTorch is installed (pip install torch; else against PyTorch on the CPU);
# 3. one forward at 65,536 positions of make lm's transformer against PyTorch's scaled_dot_product_attention;
# 4. the hand-written Linear backward against autograd (the per-device threshold, Linear.HAND_BACKWARD_MIN).
# Results: runs/bench/gpu_*.{json,md}, stamped with the GPU's name; copy them to bench/results/ to publish.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup >/dev/null
PY=.venv/bin/python
DEV=${DEV:-$($PY scripts/accelerator.py)}
case "$DEV" in CUDA|NV|AMD|METAL) ;; *) echo "gpu_check: no tinygrad GPU device (CUDA, NV, AMD or METAL) opens here (found: '${DEV}')" >&2; exit 1;; esac
export DEV
echo "gpu_check: tinygrad device $DEV"
$PY -m pytest -q -p no:cacheprovider tests/test_compute.py tests/test_model.py tests/test_variants.py tests/test_examples.py tests/test_precision.py
$PY bench/lm_step.py --devices "$DEV" --dtype float32,bfloat16 --repeats 20 --no-compile --out runs/bench/gpu_lm_step
$PY bench/long_context.py --size lm --lengths 65536 --out runs/bench/gpu_long_context_lm
$PY bench/levers.py --lever autograd --out runs/bench/gpu_levers_autograd
echo "gpu_check: wrote runs/bench/gpu_lm_step, gpu_long_context_lm, gpu_levers_autograd (.md, .json)"
