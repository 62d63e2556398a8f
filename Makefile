# momaplib: `make demo` runs the main job, `make test` runs the whole test suite,
# `make lab` opens the notebooks in JupyterLab. All create the virtual environment .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Torch is installed first: a CPU build when no NVIDIA GPU is visible (a plain `torch`
# requirement would pull a multi-GB CUDA build). Override, e.g. `make TORCH_INSTALL=skip test`.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_INSTALL ?= $(if $(HAS_GPU),skip,cpu)
STAMP := $(VENV)/.installed
# `make lab` serves notebooks/; extra JupyterLab options, e.g. on a remote machine:
#   make lab LAB_ARGS="--no-browser --port 8890"
LAB_DIR ?= notebooks
LAB_ARGS ?=

.PHONY: demo test lab lint format strip-notebooks venv clean

demo: $(STAMP)
	$(PY) -m momaplib.demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lab: $(STAMP)
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PIP) install -q -e ".[dev,notebooks]"
	$(VENV)/bin/jupyter lab --notebook-dir=$(LAB_DIR) $(LAB_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(TORCH_INSTALL),cpu)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple
endif
	$(PIP) install -q -e ".[dev,notebooks]"
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

strip-notebooks: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) outputs
