# Quick start: `make demo` (pretrain, fine-tune, evaluate, explain on data/sample) and `make test`.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench clean

# The stamp is rebuilt whenever a requirements file changes, so a pin bump reinstalls.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
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
