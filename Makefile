# Every set-up step lives here so a fresh machine, CI and a developer do the same.
# torch==2.13.0 is named in the same pip command as the project: without it pip resolves
# torch to a multi-GB CUDA build (this machine carries the CPU wheel of 2.13.0).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv demo test lint bench clean system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/deephemnma demo --out demo-output

# RELION's own projector cross-checks our conventions (tests/test_relion_conventions.py).
# Debian packages it; installing needs root (CI has it). Without it that test is skipped
# locally and fails in CI.
system-deps:
	@command -v relion_project >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq relion >/dev/null) ; } || \
	  echo "note: relion not installed; the RELION cross-check will be skipped"

test: venv system-deps
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
