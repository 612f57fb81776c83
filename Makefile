# One target per developer task. The first use creates .venv and installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lock deps-latest deps-oldest up down status demo check test test-fast unit faults bench clean

# Everything installs from requirements.lock (exact versions and sha256 hashes), then the
# project itself without dependencies. torch is the CPU build 2.13.0+cpu: this machine has
# it on disk; elsewhere, pass the PyTorch CPU index: make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
LOCK := requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps $(PIP_INDEX_ARGS) -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

## Re-resolve requirements.lock from pyproject.toml (every extra, hashes, pip and setuptools too).
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra worker --extra train --extra dev --generate-hashes \
	  --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url \
	  --no-emit-trusted-host $(PIP_INDEX_ARGS) -o $(LOCK) pyproject.toml
	$(BIN)/python deploy/lockfile.py tidy $(LOCK)

## The newest versions pyproject.toml allows, in a scratch venv, against the unit tests.
deps-latest:
	deploy/deps-scratch.sh latest

## The reader on the lowest versions of its base dependencies, in a scratch venv.
deps-oldest:
	deploy/deps-scratch.sh oldest

up: $(STAMP)
	deploy/local.sh up

down:
	deploy/local.sh down

status:
	deploy/local.sh status

## The main job end to end on local defaults: services, data, training, worker, replay, summary.
demo: up
	$(BIN)/streamrec demo

## The venv against the lock, lint (ruff), types (mypy: strict on streams/ and serving/), the compose
## file, the Kubernetes manifests (schemas and the image's contract).
check: $(STAMP)
	$(BIN)/python deploy/lockfile.py check $(LOCK)
	$(BIN)/ruff check .
	$(BIN)/mypy
	deploy/check-compose.sh
	$(BIN)/python deploy/check-k8s.py

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
