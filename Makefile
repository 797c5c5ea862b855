# make lab:  set up .venv and open the chapters in JupyterLab
# make test: set up .venv and run every test
# make test-fresh PYTHON=python3.12: the tests in a new, temporary venv for that Python
# The setup is scripts/setup_env.py (CPU torch on Linux; TORCH_INDEX=cu128 or another build, see
# its docstring). .venv is made once for one Python: `make clean` before changing PYTHON.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: lab test test-bf16 test-fresh venv bench-load small-model clean

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

# Every chapter and solution in bf16, as users of the real model run them, on a checkpoint with
# LFM2-8B-A1B's widths and 4 layers written at test time (random weights: 2.0 GB in bf16, 4 GB on disk in fp32).
test-bf16: venv
	$(BIN)/python scripts/check_notebooks_on_other_checkpoints.py --dtype bfloat16 --only lfm2-8b-a1b-widths

test-fresh:
	$(PYTHON) scripts/test_in_fresh_venv.py

# Rebuild the four shipped small models (corpus, tokenizer, training): about 80 min on 2 cores.
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

# ------------------------------------------------------------------------------ browser tests
# make test-browser: every chapter in JupyterLab in a real Chromium, as a student opens it: all
# cells run, no error output or broken widget, every explorer worked once per control. Needs the
# system Chromium (Debian's `chromium`; Playwright's own download is not used) and Playwright.
# Screenshots go to browser-screenshots/. Stops the server, its kernels and Chromium, also on failure.
CHROMIUM ?=
SCREENSHOTS ?= browser-screenshots
FIND_CHROMIUM = $${CHROMIUM:-$$(command -v chromium || command -v chromium-browser || true)}

.PHONY: test-browser browser-deps

browser-deps: venv
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet "playwright>=1.45"
	@CHROMIUM="$(CHROMIUM)"; if [ -z "$(FIND_CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make test-browser needs Chromium: install the system package (Debian: sudo apt-get install chromium)"; \
	    echo "or name one with CHROMIUM=/path/to/chromium"; exit 1; \
	  fi; \
	fi

test-browser: browser-deps
	CHROMIUM="$(CHROMIUM)"; LFM2_EDU_CHROMIUM="$(FIND_CHROMIUM)" LFM2_EDU_SCREENSHOTS="$(abspath $(SCREENSHOTS))" \
	  $(BIN)/python -m pytest tests/browser -p no:cacheprovider -p no:nbval -o addopts="-ra" -v
