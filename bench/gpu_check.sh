#!/usr/bin/env bash
# Runs the test suite and the benchmark on whatever tinygrad GPU device is present, so a user with a GPU reproduces
# our figures with one command:  bash bench/gpu_check.sh   (or DEV=METAL bash bench/gpu_check.sh to choose)
# Writes bench/gpu_results.{json,md}, bench/gpu_lm_step.{json,md} and bench/linear_backward_<device>.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup >/dev/null
PY=.venv/bin/python
if [ -z "${DEV:-}" ]; then
  for d in CUDA NV AMD METAL CL; do
    if DEV=$d $PY -c "from tinygrad import Device; Device['$d']" >/dev/null 2>&1; then DEV=$d; break; fi
  done
fi
if [ -z "${DEV:-}" ]; then echo "gpu_check: no tinygrad GPU device (CUDA, NV, AMD, METAL or CL) opens here" >&2; exit 1; fi
export DEV
echo "gpu_check: tinygrad device $DEV"
$PY -m pytest -q tests/test_compute.py tests/test_model.py tests/test_numerics.py tests/test_train.py tests/test_cl_graph.py tests/test_cl_vectorize.py
$PY bench/bench.py --devices "$DEV" --out bench/gpu_results "$@"
$PY bench/lm_step.py --devices "$DEV" --out bench/gpu_lm_step
$PY bench/linear_backward.py
