# Strata: two commands on a fresh Linux machine.
#   make demo   installs everything, then runs the whole pipeline on the demo corpus (it starts
#               the Strata server, `strata server start`, and leaves it running: `strata server stop`)
#   make test   installs everything, then runs ruff and the test suite
#   make lint   ruff (configured in pyproject.toml) over the code
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DEMO    ?= demo
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps browser-deps recordings-deps demo test lint bench results clean

# Debian packages: FluidSynth and General MIDI soundfonts (render the demo corpus and MIDI tests)
system-deps:
	@if ! command -v fluidsynth >/dev/null || ! ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1; then \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv fluidsynth fluid-soundfont-gm timgm6mb-soundfont; \
	fi

# Recorded music without MIDI (bench/recordings.py): two Debian soundtrack packages, about 200 MB; not needed by the demo
recordings-deps:
	@ls /usr/share/games/wesnoth/1.16/data/core/music/*.ogg /usr/share/games/singularity/music/*.ogg >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends wesnoth-1.16-music singularity-music; }

# Headless Chromium for the report's browser test (skipped without it; .ci/run installs it); not needed by the demo
browser-deps:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

# Python virtual environment: CPU torch 2.13.0 first (a bare `torch` pulls a CUDA build), then Strata,
# then basic-pitch without its dependencies (they name TensorFlow; pipeline/corpus/transcribe.py runs its ONNX model)
$(BIN)/strata: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps basic-pitch==0.4.0  # its ONNX model; the packages it uses are in pyproject.toml
	$(BIN)/python -m pipeline.warm  # numba's caches, compiled once here (concurrent first compiles can mix them)
	@touch $(BIN)/strata

install: system-deps $(BIN)/strata

demo: install
	$(BIN)/python -m flows.demo --out $(DEMO)

test: install lint
	$(BIN)/python -m pytest -q tests

# Needs only the virtual environment (ruff is in the dev extras), not the Debian packages
lint: $(BIN)/strata
	$(BIN)/ruff check .

# Every committed bench/results/*.json and README benchmark number, with the exact flags that made
# it (each JSON records its command and commit); on the demo corpus, rendered and preprocessed once
# as `make demo` does.  bench/orchestration.py starts and stops a private Prefect server of its own.
bench: install $(DEMO)/data/manifest.json
	$(BIN)/python bench/preprocess.py --data $(DEMO)/raw --no-flow --json bench/results/preprocess.json
	$(BIN)/python bench/orchestration.py --raw $(DEMO)/raw --data $(DEMO)/data --repeats 5 --train-minutes 1.5 --json bench/results/orchestration.json
	$(BIN)/python bench/generation.py --json bench/results/generation.json
	@if [ -d $(DEMO)/run/stages ]; then \
	  $(BIN)/python bench/demo_generation.py --run $(DEMO)/run --data $(DEMO)/data --json bench/results/demo_generation.json; \
	else echo "bench/demo_generation.py skipped: it needs the demo's trained run (make demo)"; fi
	$(BIN)/python bench/training.py --data $(DEMO)/data --steps 10 --threads 1 --json bench/results/training.json
	$(BIN)/python bench/evaluation.py --data $(DEMO)/data --workers 2 --repeats 3 --json bench/results/evaluation.json

# Every JSON behind the README's quality sections (docs/results/), regenerated in one go at one commit: the
# demo's trained run ($(DEMO)/run, `make demo`) and the recordings corpus's ($(RECORDINGS)/run: `make
# recordings-deps`, `python bench/recordings.py --out $(RECORDINGS)/raw`, `strata preprocess`, `strata train`).
# Each JSON records its command and commit; `python docs/results/tables.py` then rewrites the README's tables.
RECORDINGS ?= recordings
results: install
	$(BIN)/python bench/training_summary.py --run $(DEMO)/run --json docs/results/training.json
	$(BIN)/python bench/score_tier.py --data $(DEMO)/data --run $(DEMO)/run --json docs/results/score_tier_edges.json
	$(BIN)/python bench/score_openings.py --data $(DEMO)/data --run $(DEMO)/run --json docs/results/score_openings.json
	$(BIN)/python bench/score_openings.py --data $(RECORDINGS)/data --run $(RECORDINGS)/run --json docs/results/recordings/score_openings.json
	$(BIN)/python bench/quality.py --data $(DEMO)/data --run $(DEMO)/run --out docs/results --seconds 8 --eval-seconds 20 --end-pieces 4 --variant-pieces 2 --workers 2
	$(BIN)/python bench/quality.py --data $(RECORDINGS)/data --run $(RECORDINGS)/run --out docs/results/recordings --seconds 8 --eval-seconds 20 --end-pieces 4 --workers 2 --other-font '' --genre-pieces 4
	$(BIN)/python docs/results/tables.py

$(DEMO)/data/manifest.json:
	$(BIN)/strata demo-data --out $(DEMO)/raw
	$(BIN)/strata preprocess --raw $(DEMO)/raw --out $(DEMO)/data

# The long fault suite (kills, signals, hostile input): counts in bench/results/faults.json
.PHONY: faults
faults: install
	$(BIN)/python bench/faults.py --json bench/results/faults.json

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
