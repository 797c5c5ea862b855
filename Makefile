# make lab:  set up .venv and open the chapters in JupyterLab
# make test: set up .venv and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, which is all the chapters and tests need. For a GPU build, install
# the torch you need into .venv first; a satisfied pin is left alone.
TORCH ?= torch==2.13.0

.PHONY: lab test venv bench-load small-model clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Jupyter refuses to run as root unless told; containers and cloud machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: venv
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

test: venv
	$(BIN)/python -m pytest

# Rebuild the shipped small LFM2-MoE (corpus, tokenizer, training): about half an hour on 2 cores.
small-model: venv
	$(BIN)/python -m lfm2_edu.tiny.build

bench-load: venv
	$(BIN)/python benchmarks/load_memory.py

clean:
	rm -rf $(VENV) build *.egg-info
