# Every target sets itself up on a fresh machine: system compiler (clang), a virtual environment, the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup test test-slow test-cl lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure_system_deps.sh
	@bash scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test,plot,dev]'
	@touch $(STAMP)

test: $(STAMP)  ## the suite, on tinygrad's CPU device
	DEV=CPU $(PY) -m pytest -q $(ARGS)

test-cl: $(STAMP)  ## the core tests on tinygrad's OpenCL device (PoCL on a CPU)
	DEV=CL $(PY) -m pytest -q tests/test_compute.py tests/test_model.py $(ARGS)

test-slow: $(STAMP)  ## the slow tests kept out of `make test`
	DEV=CPU $(PY) -m pytest -q -m slow $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check ssmax_tiny tests examples

clean:
	rm -rf $(VENV) runs .pytest_cache
