# ckatlas: `make demo` runs the main job, `make test` the whole test suite.
# Both build .venv from scratch on a machine with only Python and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo-out

.PHONY: install system-packages browser demo test test-fast bench clean

# What the demo needs: ckatlas and its dependencies (no test tools, no Ray).
$(BIN)/ckatlas: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

# What the tests need on top: pytest, transformers, import-linter, rsatoolbox, Ray (the cluster executor's test).
$(VENV)/.dev-installed: $(BIN)/ckatlas
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,ray]"
	touch $@

install: $(VENV)/.dev-installed

demo: $(BIN)/ckatlas
	$(BIN)/ckatlas demo --out $(OUT)

# Debian packages the tests and the reproduction study use, installed when missing: Chromium
# (the report test renders the HTML report in a real headless browser) and Fashion-MNIST
# (dataset-fashion-mnist: the study's data, in /usr/share/datasets/fashion-mnist) and the
# fortunes quotations (fortunes: 2.5 MB of text in /usr/share/games/fortunes, which the layer-removal
# test and benchmark train a small language model on).
system-packages:
	@missing=; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	[ -d /usr/share/games/fortunes ] || missing="$$missing fortunes"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then S=; else S=sudo; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq $$missing >/dev/null; \
	fi

browser: system-packages

# The whole suite, slow end-to-end tests included; first, the import layers of pyproject.toml.
test: $(VENV)/.dev-installed system-packages
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "slow or not slow" -q

# Fast tests only (what a bare `pytest` runs).
test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev-installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/bench_cka.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
