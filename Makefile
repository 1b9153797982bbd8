# Every set-up step lives here so a fresh machine, CI and a developer do the same.
# torch==2.13.0 is named in the same pip command as the project: without it pip resolves
# torch to a multi-GB CUDA build (this machine carries the CPU wheel of 2.13.0).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/deephemnma demo --out demo-output

test: venv
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
