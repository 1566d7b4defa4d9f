# Quick start: `make demo` (pretrain, fine-tune, evaluate, explain on data/sample) and `make test`.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
QUICK ?= 0

.PHONY: install demo test test-quick lint format configs docs bench gpu-check weights release label-env label pacs \
	pacs-stop system-packages clean

# The stamp is rebuilt whenever a requirements file or the package metadata changes, so a pin bump reinstalls.
# The bundle package is installed editable: scripts and tests import it from any folder. bundle.startup writes a
# .pth file so that what MONAI refuses before a config runs (a missing --config_file) ends in one message.
$(VENV)/.installed: requirements.txt requirements-deploy.txt requirements-dev.txt pyproject.toml bundle/startup.py
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m bundle.startup
	@touch $@

install: $(VENV)/.installed

demo: install
	DEMO_DIR=$(DEMO_DIR) QUICK=$(QUICK) PY=$(PY) bash scripts/demo.sh

test: install
	$(PY) -m pytest -q --durations=25 tests

# Leaves out the tests marked slow (several processes, kill and resume, servers, the zoo, the release, the study),
# and fuzzes the readers with the local count of examples even where CI is set (the full count is make test's).
test-quick: install
	CI= $(PY) -m pytest -q --durations=25 -m "not slow" tests

# The MONAI model zoo's code-format rules (setup.cfg, [tool.black] in pyproject.toml); `make format` applies them.
lint: install
	$(PY) -m isort --check-only --diff .
	$(PY) -m black --check .
	$(PY) -m flake8 .
	$(PY) .ci/format_json.py --check
	$(PY) .ci/make_configs.py --check
	$(PY) .ci/make_settings_doc.py --check

# The standalone configs are written from configs/layers (what several workflows share is written once there).
configs: install
	$(PY) .ci/make_configs.py --fix

# docs/settings.md, the reference of every setting id, is written from the rules in bundle/ and from the configs.
docs: install
	$(PY) .ci/make_settings_doc.py --fix

format: install
	$(PY) -m isort .
	$(PY) -m black .
	$(PY) .ci/format_json.py --fix

# The pins resolve as binary wheels for Python 3.10 (the model zoo's CI) and 3.11 (a dry run: nothing installs).
pins: install
	$(PY) .ci/check_pins.py

bench: install
	$(PY) -m benchmarks all

# The GPU figures of the model card in one run of at most 8 minutes: GPU_CHECK_OUT/gpu_check.json and summary.txt
# (benchmarks/gpu.py). DRY=1 runs the same parts on the CPU at toy sizes, to check the check. Any Python with the
# bundle's requirements (and a CUDA build of torch) runs it: GPU_PY, by default this venv's when it exists.
GPU_CHECK_OUT ?= runs/gpu_check
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
DRY ?= 0
gpu-check:
	$(GPU_PY) -m benchmarks gpu --out $(GPU_CHECK_OUT) $(if $(filter 1,$(DRY)),--dry)

# Reproduce the shipped models/model.pt (and its eval_metrics in configs/metadata.json) from the CC BY images of
# the real collection (SHARED_CXR): SimCLR pretraining, then multi-task fine-tuning, then a test-split evaluation.
# The default is the developers' copy of that collection; give yours with `make weights SHARED_CXR=<your data>`.
SHARED_CXR ?= ../shared/data/cxr-real
weights: install
	$(PY) scripts/train_release_model.py --src $(SHARED_CXR)

# dist/chest_xray_ssl_multitask_v<version>.zip: what the model zoo ships (configs, bundle, user scripts, models, docs).
release: install
	$(PY) scripts/release.py

# MONAI Label in an environment of its own (monailabel 0.8.5 needs numpy<2 and pydicom<3; label_app/constraints.txt
# pins every package). SAM2_BUILD_CUDA=0 keeps sam2's source build on the CPU; PIP_CONSTRAINT reaches that build too.
LABEL_VENV ?= .venv-label
LABEL_PY := $(LABEL_VENV)/bin/python
$(LABEL_VENV)/.installed: label_app/requirements.txt label_app/constraints.txt pyproject.toml
	@test -x $(LABEL_PY) || $(PYTHON_SYS) -m venv $(LABEL_VENV)
	$(LABEL_PY) -m pip install --quiet --upgrade pip
	SAM2_BUILD_CUDA=0 PIP_CONSTRAINT=label_app/constraints.txt $(LABEL_PY) -m pip install --quiet -r label_app/requirements.txt
	$(LABEL_PY) -m pip install --quiet --no-deps -e .
	@touch $@

label-env: $(LABEL_VENV)/.installed

# A MONAI Label server on the embedded sample (studies copied to LABEL_STUDIES, sample masks as final labels),
# on 127.0.0.1 unless LABEL_HOST says otherwise; a DICOMweb URL as LABEL_STUDIES serves that archive instead
# (docs/pacs.md). The server writes model/, logs/ and bin/ into LABEL_APP.
LABEL_APP ?= label_app
LABEL_STUDIES ?= runs/label/studies
LABEL_HOST ?= 127.0.0.1
LABEL_PORT ?= 8000
label: label-env
	$(if $(findstring ://,$(LABEL_STUDIES)),@echo "studies: the DICOMweb archive $(LABEL_STUDIES)",$(LABEL_PY) label_app/studies.py --out $(LABEL_STUDIES))
	$(LABEL_PY) -m monailabel.main start_server --app $(LABEL_APP) --studies $(LABEL_STUDIES) \
		--host $(LABEL_HOST) --port $(LABEL_PORT) --conf bundle_root $(CURDIR)

# A local PACS (docs/pacs.md): Orthanc on 127.0.0.1 with DICOMweb at http://127.0.0.1:$(PACS_PORT)/dicom-web
# (REST API and DICOMweb share the HTTP port; its DICOM port, C-STORE, is off unless PACS_DICOM_PORT is given),
# its database, log and PID file in PACS_STORAGE, and the sample's DX studies stored in it. `make pacs-stop` stops
# it by its PID. MONAI Label on it: `make label LABEL_STUDIES=http://127.0.0.1:8042/dicom-web`.
PACS_STORAGE ?= runs/pacs
PACS_PORT ?= 8042
PACS_DICOM_PORT ?=
pacs: install system-packages
	$(PY) -m scripts.pacs start --storage $(PACS_STORAGE) --port $(PACS_PORT) $(if $(PACS_DICOM_PORT),--dicom-port $(PACS_DICOM_PORT))
	$(PY) -m scripts.pacs sample --out $(PACS_STORAGE)/sample
	$(PY) -m scripts.pacs upload --url http://127.0.0.1:$(PACS_PORT) $(PACS_STORAGE)/sample

pacs-stop:
	$(PY) -m scripts.pacs stop --storage $(PACS_STORAGE)

# The Debian packages the PACS and viewer tests use: Orthanc with its DICOMweb plugin, dicom3tools (the DICOM
# validator dciodvfy) and Chromium (headless screenshots of the viewer). Installs only what is missing (needs root).
SYSTEM_PACKAGES := orthanc orthanc-dicomweb dicom3tools chromium
system-packages:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; }

clean:
	rm -rf $(DEMO_DIR) eval .pytest_cache
