# mai-repro: the two commands are `make reproduce` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NBVAL_DIR := runs/nbval

.PHONY: install reproduce test lint unit notebooks gpucheck-dry lab figures strip clean help

help:
	@echo "make reproduce  - set up .venv and run every notebook at the laptop preset (runs/laptop/)"
	@echo "make test       - set up .venv, then lint, unit tests and every notebook at the smoke preset"
	@echo "make lab        - open the notebooks in JupyterLab"
	@echo "make figures    - copy the laptop run's figures into figures/"
	@echo "make strip      - strip outputs from notebooks/ before committing"

# Creates the virtual environment if needed and installs torch (CPU wheel), then the package
# with its extras (dev: pytest, ruff, nbstripout; ray: the cluster executor, tested locally).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	@touch $(STAMP)

install: $(STAMP)

reproduce: install
	$(PY) -m mai_repro.pipeline --preset laptop

lint: install
	$(PY) -m ruff check .

unit: install
	$(PY) -m pytest tests

# Every notebook, parameterised at the smoke preset by papermill, executed and checked by nbval.
notebooks: install
	rm -rf $(NBVAL_DIR)
	$(PY) -m mai_repro.pipeline --preset smoke --prepare $(NBVAL_DIR)
	$(PY) -m pytest --nbval-lax -p no:cacheprovider $(NBVAL_DIR)

# The prepared GPU check (benchmarks/gpu_check.py) in its CPU dry mode: tiny shapes, notebook 00
# only, the same JSON keys as on a GPU; keeps the check from rotting between device sessions.
gpucheck-dry: install
	PYTHON=$(PY) bash benchmarks/gpu_check.sh runs/gpucheck-dry --dry

test: lint unit notebooks gpucheck-dry

lab: install
	$(VENV)/bin/jupyter lab notebooks/

figures: install
	$(PY) -m mai_repro.plots collect runs/laptop figures

strip: install
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf runs/smoke runs/nbval runs/gpucheck-dry .pytest_cache .ruff_cache
