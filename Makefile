# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo ladder test test-slow lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

# The CPU ladder (sweeps/cpu_ladder.yaml, <= 90 min on 2 cores): writes the measured result to docs/ladder/.
# Hold-outs: the largest budget (C above the second largest) and the largest size (N above the second largest).
LADDER_HOLDOUT_C ?= 6.0e11
LADDER_HOLDOUT_N ?= 4.0e5
ladder: $(STAMP)
	$(BIN)/python -m orchestrator.demo --spec sweeps/cpu_ladder.yaml --out docs/ladder \
	  --holdout-above $(LADDER_HOLDOUT_C) --holdout-n-above $(LADDER_HOLDOUT_N) --budget 1e13

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf runs data/cache
