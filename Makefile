# One target per developer task. The first use creates .venv and installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv up down status demo check test test-fast unit faults bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in the train extra: a looser pin pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -e '.[worker,train,dev]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	deploy/local.sh up

down:
	deploy/local.sh down

status:
	deploy/local.sh status

## The main job end to end on local defaults: services, data, training, worker, replay, summary.
demo: up
	$(BIN)/streamrec demo

## Lint (ruff), types (mypy: strict on streams/ and serving/), the compose file (config).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	deploy/check-compose.sh

## The whole test suite, fault suite included; starts the services it needs and stops the ones it started.
test: $(STAMP)
	deploy/run-tests.sh
	deploy/run-tests.sh tests/faults -q -m faults

## Unit and integration tests only (the fault suite adds about 5 minutes).
test-fast: $(STAMP)
	deploy/run-tests.sh

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

## The fault suite: kills, pauses, joins, Redis outages, hostile records, other producers.
faults: $(STAMP)
	deploy/run-tests.sh tests/faults -q -m faults

bench: up
	$(BIN)/streamrec bench

clean:
	rm -rf var build *.egg-info
