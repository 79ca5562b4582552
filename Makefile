# Every target sets itself up on a fresh machine: clang (tinygrad's CPU device), PoCL where there is no GPU, a virtual
# environment with the package and its extras. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# The experiment targets run with the OpenCL-on-CPU kit (ssmax_tiny/pocl), which installs itself only where the device is
# OpenCL on a CPU: on a GPU they run plain tinygrad. POCL=0 runs plain tinygrad here too.
POCL ?= 1
RUN := SSMAX_TINY_POCL=$(POCL) $(PY) -m ssmax_tiny run
# tinygrad's CPU device compiles with $$CC: clang-19 where the set-up installed it (bfloat16 needs clang 15 or later),
# else clang; a CC you set is kept (make's own default, cc, is not a choice)
ifeq ($(origin CC),default)
CC := $(shell command -v clang-19 >/dev/null 2>&1 && echo clang-19 || echo clang)
endif
export CC
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
# the core tests, run on the accelerator (a GPU, or PoCL's OpenCL on a CPU) besides the CPU device: make test runs their
# float64-reference part (-m fast) and the kit's own tests there; make test-cl all of them, with the kit and without
CORE := tests/test_compute.py tests/test_model.py tests/test_variants.py tests/test_examples.py tests/test_pocl.py

.PHONY: help setup test test-fast test-slow test-cl test-emulated demo lm lm-prope passkey bench tune gpu-build gpu-check lint clean

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/:.*## /\t/'

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure_system_deps.sh
	@bash scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test,plot,dev,ray]'
	@touch $(STAMP)

test-fast: $(STAMP)  ## the edit-run loop: compute, the variants against float64, a tiny model, a training loop (under a minute)
	DEV=CPU $(PYTEST) -n 2 -m fast $(ARGS)

test: $(STAMP)  ## the suite on tinygrad's CPU device, then the core tests on the accelerator (a GPU, or PoCL with the kit and without)
	DEV=CPU $(PYTEST) -n auto --dist loadgroup $(ARGS)
	@set -e; accel=$$($(PY) scripts/accelerator.py); \
	if [ "$$accel" = "CL" ]; then \
	  echo "core tests on the OpenCL device (DEV=CL), with the OpenCL-on-CPU kit"; SSMAX_TINY_POCL=1 DEV=CL $(PYTEST) -n 2 --dist loadgroup -m "fast or kit" $(CORE) $(ARGS); \
	  echo "and on plain tinygrad"; SSMAX_TINY_POCL=0 DEV=CL $(PYTEST) -n 2 --dist loadgroup -m "fast and not loop" $(CORE) $(ARGS); \
	elif [ -n "$$accel" ]; then echo "core tests on the GPU (DEV=$$accel)"; DEV=$$accel $(PYTEST) $(CORE) $(ARGS); \
	else echo "no GPU or OpenCL device: the core tests ran on the CPU device only (Debian/Ubuntu: apt-get install pocl-opencl-icd)"; fi

test-slow: $(STAMP)  ## the long end-to-end tests kept out of make test (runners, kills, resumes, memory, make tune's search)
	DEV=CPU $(PYTEST) -n auto --dist loadgroup -m slow $(ARGS)
	@set -e; if [ "$$($(PY) scripts/accelerator.py)" = "CL" ]; then SSMAX_TINY_POCL=1 DEV=CL $(PYTEST) -m slow tests/test_tuning.py $(ARGS); fi

test-cl: $(STAMP)  ## the core tests on tinygrad's OpenCL device, with the OpenCL-on-CPU kit and without
	SSMAX_TINY_POCL=1 DEV=CL $(PYTEST) -n 2 --dist loadgroup $(CORE) $(ARGS)
	SSMAX_TINY_POCL=0 DEV=CL $(PYTEST) -n 2 --dist loadgroup $(CORE) $(ARGS)

test-emulated: $(STAMP)  ## a micro model on CUDA, Metal and AMD tensor cores in tinygrad's Python emulator, against the CPU device
	DEV=CPU $(PYTEST) -n 2 -m emulated tests/test_emulated.py $(ARGS)

demo: $(STAMP)  ## experiments/demo.toml: SSMax against softmax on retrieval beyond the training length (about 6 minutes) -> runs/demo
	$(RUN) experiments/demo.toml $(ARGS)

lm: $(STAMP)  ## experiments/lm.toml: byte-level language models on real text, 18 cells (about 20 minutes) -> runs/lm
	$(RUN) experiments/lm.toml $(ARGS)

lm-prope: $(STAMP)  ## experiments/lm-prope.toml: make lm with partial RoPE (about 7 minutes) -> runs/lm-prope
	$(RUN) experiments/lm-prope.toml $(ARGS)

passkey: $(STAMP)  ## experiments/passkey.toml: pass key retrieval beyond L, 18 cells (about 2.5 hours after make tune) -> runs/lm-passkey
	$(RUN) experiments/passkey.toml $(ARGS)

bench: $(STAMP)  ## speed side by side with PyTorch: the Edifice model, then make lm's training step -> runs/bench
	$(PY) -m pip install -q -e '.[torch]'
	SSMAX_TINY_POCL=$(POCL) $(PY) bench/bench.py $(ARGS)
	SSMAX_TINY_POCL=$(POCL) $(PY) bench/lm_step.py

tune: $(STAMP)  ## BEAM-search make lm's and make demo's training steps once (the OpenCL-on-CPU kit; later runs use them)
	$(PY) -m pip install -q -e '.[torch]'
	SSMAX_TINY_POCL=1 DEV=CL $(PY) -m ssmax_tiny run experiments/lm.toml --tune-kernels --positionals rope,p-rope,none $(ARGS)
	SSMAX_TINY_POCL=1 DEV=CL $(PY) -m ssmax_tiny run experiments/demo.toml --tune-kernels $(ARGS)
	SSMAX_TINY_POCL=1 DEV=CL $(PY) bench/lm_step.py --beam 0,tuned --devices CL

gpu-build: $(STAMP)  ## every kernel of the GPU paths built by NVIDIA's (NVRTC, from PyPI) and AMD's (LLVM) compilers, no GPU needed
	$(PY) -m pip install -q -e '.[gpu-build]'
	@bash scripts/ensure_system_deps.sh gpu-build
	$(PY) scripts/gpu_build.py $(ARGS)

gpu-check: $(STAMP)  ## on a machine with a GPU: the core tests there, make lm's step in float32 and bfloat16, a 64k forward
	bash bench/gpu_check.sh

lint: $(STAMP)
	$(PY) -m ruff check ssmax_tiny tests examples bench scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
