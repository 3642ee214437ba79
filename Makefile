# Two entry points for a new machine: `make repro` and `make test`.
# Both create .venv and install the package (with its pinned dependencies) when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# No network, ever: W&B offline without telemetry, DVC without analytics, no tracking.
export WANDB_MODE ?= offline
export WANDB_ERROR_REPORTING := false
export WANDB_SILENT := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

.PHONY: install repro real-world repro-real test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: the CPU wheel on disk; a looser spec pulls CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	# The verified set (constraints.txt) within pyproject.toml's ranges; dev brings every extra.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The whole pipeline on the embedded synthetic world (or the data folder params.yaml names).
repro: $(STAMP)
	bash scripts/repro.sh

# The public real-audio world (README "The real-audio world"): built from Debian's game music
# (downloads about 700 MB of packages once, into .cache/real_world), then run as a DVC experiment.
real-world: $(STAMP)
	$(BIN)/musicrec real-world --out data/real_world

repro-real: real-world
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc exp run -S data.root=data/real_world

test: $(STAMP)
	bash scripts/test_setup.sh
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

# The fast tier while you work: lint, unit and known-answer tests; no stage runs, no DVC, no
# browser (tests marked slow, by fixture in tests/conftest.py), no GPU. About a minute here.
test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) .cache
