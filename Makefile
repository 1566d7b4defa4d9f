# Quick start: `make demo` (pretrain, fine-tune, evaluate, explain on data/sample) and `make test`.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench clean

# The stamp is rebuilt whenever a requirements file or the package metadata changes, so a pin bump reinstalls.
# The bundle package is installed editable: scripts and tests import it from any folder.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

install: $(VENV)/.installed

demo: install
	DEMO_DIR=$(DEMO_DIR) PY=$(PY) bash scripts/demo.sh

test: install
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) scripts/benchmark.py all

clean:
	rm -rf $(DEMO_DIR) eval .pytest_cache .ruff_cache
