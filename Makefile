# Strata: two commands on a fresh Linux machine.
#   make demo   installs everything, then runs the whole pipeline on the demo corpus
#   make test   installs everything, then runs ruff and the test suite
#   make lint   ruff (configured in pyproject.toml) over the code
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DEMO    ?= demo
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint bench clean

# Debian packages: FluidSynth and General MIDI soundfonts (render the demo corpus and MIDI tests)
system-deps:
	@if ! command -v fluidsynth >/dev/null || ! ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1; then \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv fluidsynth fluid-soundfont-gm timgm6mb-soundfont; \
	fi

# Python virtual environment: CPU torch 2.13.0 first (a bare `torch` pulls a CUDA build), then Strata
$(BIN)/strata: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(BIN)/strata

install: system-deps $(BIN)/strata

demo: install
	$(BIN)/python -m flows.demo --out $(DEMO)

test: install lint
	$(BIN)/python -m pytest -q tests

# Needs only the virtual environment (ruff is in the dev extras), not the Debian packages
lint: $(BIN)/strata
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/preprocess.py --json bench/results/preprocess.json
	$(BIN)/python bench/generation.py --json bench/results/generation.json
	$(BIN)/python bench/training.py --json bench/results/training.json
	$(BIN)/python bench/evaluation.py --json bench/results/evaluation.json

# The long fault suite (kills, signals, hostile input): counts in bench/results/faults.json
.PHONY: faults
faults: install
	$(BIN)/python bench/faults.py --json bench/results/faults.json

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
