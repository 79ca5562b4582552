# Every target sets itself up on a fresh machine: system compiler (clang), a virtual environment, the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup test test-slow test-cl demo lm passkey bench tune lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure_system_deps.sh
	@bash scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test,plot,dev,ray]'
	@touch $(STAMP)

CORE := tests/test_compute.py tests/test_model.py tests/test_cl_graph.py tests/test_cl_vectorize.py

test: $(STAMP)  ## the suite on tinygrad's CPU device (one pytest worker per core: that device runs on one), then the core tests on its OpenCL device (PoCL) where one is present
	DEV=CPU $(PY) -m pytest -q -n auto --dist loadgroup $(ARGS)
	@if DEV=CL $(PY) -c "from tinygrad import Device; Device['CL']" >/dev/null 2>&1; then \
	  echo "core tests on the OpenCL device (DEV=CL):"; DEV=CL $(PY) -m pytest -q $(CORE) $(ARGS); \
	else echo "no OpenCL device: skipped the DEV=CL run (Debian/Ubuntu: apt-get install pocl-opencl-icd)"; fi

test-cl: $(STAMP)  ## only the core tests, on tinygrad's OpenCL device (PoCL on a CPU)
	DEV=CL $(PY) -m pytest -q $(CORE) $(ARGS)

test-slow: $(STAMP)  ## the slow tests kept out of `make test`
	DEV=CPU $(PY) -m pytest -q -n auto --dist loadgroup -m slow $(ARGS)

demo: $(STAMP)  ## SSMax against softmax on long-context retrieval (under 10 minutes on 2 cores); ARGS adds flags
	$(PY) -m ssmax_tiny demo $(ARGS)

lm: $(STAMP)  ## the language-model comparison on real text, softmax / SSMax / scale-invariant x RoPE / none x 3 seeds (about 20 minutes on 2 cores) -> runs/lm
	$(PY) -m ssmax_tiny lm-compare $(ARGS)

passkey: $(STAMP)  ## pass key retrieval beyond the training length: make lm's model, every batch keyed, the answer weighted, 4000 steps, softmax / SSMax / scale-invariant x RoPE / partial RoPE / none x seeds 0 and 1 (about 2.5 hours on 2 cores after make tune; finished cells are kept) -> runs/lm-passkey
	$(PY) -m ssmax_tiny lm-compare --passkey-rate 1 --answer-weight 10 --steps 4000 --positionals rope,p-rope,none --attentions softmax,ssmax,scale_invariant --seeds 0,1 --samples 16 --out runs/lm-passkey $(ARGS)

bench: $(STAMP)  ## side by side: tinygrad on each device present, numpy sgemm, PyTorch (installed here) -> bench/results.{json,md}, then make lm's training step -> bench/lm_step.{json,md}
	$(PY) -m pip install -q -e '.[torch]'
	$(PY) bench/bench.py $(ARGS)
	$(PY) bench/lm_step.py

tune: $(STAMP)  ## BEAM-search the large kernels of make lm's and make demo's training steps once (cached by tinygrad; later runs use them on their own), then make lm's step tuned against the heuristics and PyTorch -> bench/lm_step_tuned.{json,md}
	$(PY) -m pip install -q -e '.[torch]'
	$(PY) -m ssmax_tiny lm-compare --tune-kernels --positionals rope,p-rope,none $(ARGS)
	$(PY) -m ssmax_tiny demo --tune-kernels $(ARGS)
	$(PY) bench/lm_step.py --beam 0,tuned --devices $$($(PY) -c "from tinygrad import Device; print(Device.DEFAULT)") --out bench/lm_step_tuned

lint: $(STAMP)
	$(PY) -m ruff check ssmax_tiny tests examples bench

clean:
	rm -rf $(VENV) runs .pytest_cache
