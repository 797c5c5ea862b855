# make lab:  set up .venv and open the chapters in JupyterLab
# make test: set up .venv and run every test
# make test-fresh PYTHON=python3.12: the tests in a new, temporary venv for that Python
# The setup is scripts/setup_env.py (CPU torch on Linux; TORCH_INDEX=cu128 or another build, see
# its docstring). .venv is made once for one Python: `make clean` before changing PYTHON.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: lab test test-fresh venv bench-load small-model clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_env.py
	$(PYTHON) scripts/setup_env.py --venv $(VENV)
	touch $@

# Jupyter refuses to run as root unless told; containers and cloud machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: venv
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

test: venv
	$(BIN)/python -m pytest

test-fresh:
	$(PYTHON) scripts/test_in_fresh_venv.py

# Rebuild the shipped small LFM2-MoE (corpus, tokenizer, training): about half an hour on 2 cores.
small-model: venv
	$(BIN)/python -m lfm2_edu.tiny.build

bench-load: venv
	$(BIN)/python benchmarks/load_memory.py

clean:
	rm -rf $(VENV) build *.egg-info

# ---- The write-it-yourself track (student/): each block swapped into the model, under the tests.
# make grade: every block; make grade CH=04: one chapter's; BLOCKS=solutions.student grades the
# reference solutions. The same as: .venv/bin/python -m student.grade [--chapter 04]
.PHONY: grade
grade: venv
	$(BIN)/python -m student.grade $(if $(CH),--chapter $(CH)) $(if $(BLOCKS),--blocks $(BLOCKS))
