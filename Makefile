# Every set-up step lives here so a fresh machine, CI and a developer do the same.
# torch==2.13.0 is named in the same pip command as the project: without it pip resolves
# torch to a multi-GB CUDA build (this machine carries the CPU wheel of 2.13.0).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv demo test lint bench clean system-deps gpu-wheels

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/deephemnma demo --out demo-output

# RELION's own projector cross-checks our conventions (tests/test_relion_conventions.py);
# Chromium and its WebDriver run the explorer's browser test (tests/test_explore_browser.py).
# Debian packages both; installing needs root (CI has it). Without them those tests are
# skipped locally and fail in CI.
SYSTEM_PACKAGES = relion chromium chromium-driver
system-deps:
	@{ command -v relion_project && command -v chromium && command -v chromedriver ; } \
	    >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null) ; } || \
	  echo "note: $(SYSTEM_PACKAGES) not all installed; tests that need them will be skipped"

test: venv system-deps
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

bench: venv
	$(PY) bench/run.py

# The packages a lent GPU machine lacks (its python3 has torch, numpy, scipy, scikit-learn,
# matplotlib), as Python 3.12 x86-64 wheels in .whl/ for bench/gpu_lease.sh (docs/gpu.md).
GPU_WHEELS = gemmi==0.7.5 mrcfile==1.5.4 starfile==0.5.13 pandas==3.1.1 typer==0.29.2 \
	rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 pydantic==2.14.4 \
	pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
