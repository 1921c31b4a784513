# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
# TORCH pins the tested CPU build (installed from local disk on our machines); override it
# for another build, e.g. `make test TORCH='torch>=2.1'` on a CUDA machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# The NIR peers (snntorch, spikingjelly) are part of the set-up: tests/test_nir_peers.py and
# tests/test_deploy_nir.py check import and export against them, and bench/ times them.
# spikingjelly's declared deps would replace the CPU torch with a CUDA build, so it goes in with
# --no-deps (loguru is what it needs at import); "$(TORCH)" beside snntorch keeps pip from
# moving torch. The C++ neuron kernel is built at set-up, not at the first neuron call (which
# still builds it, or falls back to the eager path, if this cannot).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,nir]'
	$(PY) -m pip install -q "$(TORCH)" snntorch==1.0.0 loguru
	$(PY) -m pip install -q --no-deps spikingjelly==2.0.0
	$(PY) -m multispike.kernels.build || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/multispike demo

# the tests and every docstring example of the package, in one run
test: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard bench) $(wildcard examples)
	$(PY) -m pytest -q -n 2 tests src/multispike --doctest-modules

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard bench) $(wildcard examples)

# the peers (snntorch, spikingjelly) are installed with the set-up ($(STAMP))
bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
