# fer-pipeline: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# run-local: DATA= a Kaggle zip, folder or fer2013.csv (empty = generated sample)
DATA ?=
EPOCHS ?=
SAMPLES ?=
# run-local: PRESET=cpu trains the compact CNN from scratch (100 epochs, ending sooner where they would pass its 110-minute budget; docs/model-quality.md)
PRESET ?=
CACHE ?=
# test/test-fast: TEST_WORKERS= pytest processes, each taking whole test files (pytest-xdist's -n:
# a count, auto = one per core, 0 = the tests in make's own pytest process)
TEST_WORKERS ?= 2
ifneq ($(filter test test-fast,$(MAKECMDGOALS)),)
ifeq ($(shell [[ '$(TEST_WORKERS)' =~ ^([0-9]+|auto)$$ ]] && echo ok),)
$(error TEST_WORKERS=$(TEST_WORKERS): use a number of processes (0 = none besides pytest's own) or auto)
endif
endif
# compile/submit: images are tagged by commit so a compiled pipeline points at the
# images built from the same tree.
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
REGISTRY ?= fer-pipeline
IMAGE ?= $(REGISTRY)/fer-pipeline-cpu:$(TAG)
GPU_IMAGE ?= $(REGISTRY)/fer-pipeline-gpu:$(TAG)

.PHONY: help setup serving-compat lint format test test-fast docs run-local run-containers container-engine compile validate clean bench bench-setup bench-containers serve

# Variables whose values `make help` shows in place of their names ($$(NAME) stays a name).
HELP_VARS = PORT TAG CONFIG LOCAL_BASE_IMAGE KFP_VERSION KFP_PORT TB_PORT

help: ## List the targets with a one-line description
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  sed $(foreach v,$(HELP_VARS),-e 's|$$($(v))|$($(v))|g') -e 's|\$$\$$(|$$(|g' | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[pipeline,kaggle,detect,serve,containers,dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the pinned dependencies (idempotent)

# The TensorFlow of the default Vertex serving image (tf2-cpu.2-15), for tests/test_serving_compat.py
COMPAT_VENV := build/serving-compat-venv
COMPAT_STAMP := $(COMPAT_VENV)/.installed-stamp

$(COMPAT_STAMP): requirements-serving-compat.lock
	@if $(PYTHON) -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))'; then \
	  test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV); \
	  $(COMPAT_VENV)/bin/python -m pip install --quiet -r requirements-serving-compat.lock && touch $@; \
	else echo "serving-compat: TensorFlow 2.15 has no wheels for $$($(PYTHON) -V); tests/test_serving_compat.py will skip"; fi

serving-compat: $(COMPAT_STAMP) ## Virtualenv with the serving image's TensorFlow 2.15 (build/serving-compat-venv), for make test

# ruff's rules and exclusions: pyproject.toml [tool.ruff]; the same hooks for commits: .pre-commit-config.yaml
lint: setup ## Lint and check the formatting with ruff (make test runs it first)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup ## Apply ruff's fixes and formatting (what make lint asks for)
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

test: setup lint serving-compat ## Lint, then run the test suite (real-data tests skip where the FER-2013 zip is absent)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

docs: setup ## Regenerate README's recipe table from src/fer_pipeline/config.py and the presets
	$(PY) -m fer_pipeline.recipe_table README.md

test-fast: setup ## Run the tests except the slow and real-data ones
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not realdata"

# A yes/no make variable as a command-line flag: $(call switch,NAME,--flag). 1/yes/true give the
# flag, empty/0/no/false nothing; anything else stops make before any work, naming the variable.
switch = $(if $(filter 1 yes true,$($(1))),$(2),$(if $(filter-out 0 no false,$($(1))),$(error $(1)=$($(1)): use 1 or 0)))
# A make value as one shell word: single-quoted, each quote in it written '\'' (a path or
# name with a quote or a dollar sign reaches the command as given).
sq = '$(subst ','\'',$(1))'

RUN_FLAGS = $(if $(DATA),--data $(call sq,$(DATA))) $(if $(PRESET),--preset $(call sq,$(PRESET))) $(if $(EPOCHS),--epochs $(call sq,$(EPOCHS))) $(if $(SAMPLES),--max-samples $(call sq,$(SAMPLES))) $(call switch,CACHE,--cache)

run-local: setup ## Run the whole pipeline locally (kfp.local + GCS emulator); DATA=, PRESET=cpu, EPOCHS=, SAMPLES=, CACHE=1
	$(PY) -m pipelines.run_local $(RUN_FLAGS)

# run-containers: TRAIN_IMAGE=auto|cpu|gpu (auto: the GPU image only where a GPU is visible);
# COMPARE=1 then runs the same pipeline with run-local's runner and compares the answers
TRAIN_IMAGE ?= auto
COMPARE ?=

run-containers: setup container-engine ## Run the compiled pipeline with each task in its image (Docker or Podman); same options as run-local, TRAIN_IMAGE=, COMPARE=1
	$(PY) -m pipelines.run_containers $(RUN_FLAGS) --train-image $(call sq,$(TRAIN_IMAGE)) $(call switch,COMPARE,--compare)

container-engine: ## Install podman, runc and debootstrap from Debian's packages unless a Docker daemon answers
	containers/install-engine.sh

# compile: KFP_PROFILE=kind|gke sizes the KFP file (pipelines/resources.py); GPU_COUNT= nvidia.com/gpu
# per GPU step there (default 1); FROZEN_ON_GPU=1 puts frozen training on the GPU too (both files)
KFP_PROFILE ?= kind
GPU_COUNT ?=
FROZEN_ON_GPU ?=

compile: setup ## Compile build/pipeline.yaml (Vertex) and build/pipeline-kfp.yaml (KFP); KFP_PROFILE=kind|gke, GPU_COUNT=, FROZEN_ON_GPU=1
	$(PY) -m pipelines.compile --image $(call sq,$(IMAGE)) --gpu-image $(call sq,$(GPU_IMAGE)) --out-dir build --kfp-profile $(call sq,$(KFP_PROFILE)) \
	  $(if $(GPU_COUNT),--gpu-count $(call sq,$(GPU_COUNT))) $(call switch,FROZEN_ON_GPU,--frozen-on-gpu)

bench-setup: setup ## Install tf-keras for the seed-style baseline of bench/throughput.py (no deps: keeps tensorflow-cpu)
	$(PY) -m pip install --quiet --no-deps "tf-keras==$$(grep -i '^tf_keras==' requirements.lock | cut -d= -f3)"

bench: bench-setup ## Run the benchmarks (throughput, ingest, run-local); each appends its table to docs/benchmarks.md
	$(PY) -m bench.throughput
	$(PY) -m bench.ingest
	$(PY) -m bench.run_local

bench-containers: setup container-engine ## Image build times (cold, warm) and run-containers vs run-local per step; appends to docs/benchmarks.md
	$(PY) -m bench.containers

validate: setup ## Validate a dataset: make validate DATA=path/to/fer2013.zip
	@test -n $(call sq,$(DATA)) || { echo "set DATA= to the Kaggle zip, its folder or fer2013.csv: make validate DATA=path/to/fer2013.zip" >&2; exit 2; }
	$(VENV)/bin/fer-pipeline validate $(call sq,$(DATA))

# serve: MODEL= a registry reference (in run-local's registry), a model folder or a .keras file;
# PORT= the loopback port; `fer-pipeline serve --help` lists the limits.
MODEL ?= fer-emotion-local@champion
PORT ?= 8080

serve: setup ## Serve MODEL (default run-local's champion) on http://127.0.0.1:$(PORT) as Vertex's TensorFlow container does; MODEL=, PORT=
	$(VENV)/bin/fer-pipeline serve $(call sq,$(MODEL)) --registry build/local/registry --port $(call sq,$(PORT))

clean: ## Remove build outputs and local runs (keeps .venv)
	rm -rf build .pytest_cache

# Cloud path (images, infrastructure, submission): mk/cloud.mk
-include mk/cloud.mk
# Watching runs (TensorBoard, run comparison, report checks, templates, schedules): mk/watch.mk
-include mk/watch.mk
