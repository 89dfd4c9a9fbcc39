# Sluice: every target a newcomer needs. `make help` lists them.
# Settings are env vars (see pipelines/config.py); the defaults run everything on this machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv on PATH, else the uv module `make setup` installs with pip (no assumption about where scripts go).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
MODEL ?= rossmann
PYTEST_ARGS ?=

.PHONY: help setup up down status train evaluate serve image demo test test-fast lint format bench promote rollout history clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## create .venv from uv.lock and LocalStack's own virtualenv (installs uv if missing)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	$(RUN) python -c "from pipelines.config import load_settings; from pipelines.platform import ensure_localstack_venv; ensure_localstack_venv(load_settings())"

up: setup ## start LocalStack S3, apply terraform/storage, start MLflow (http://127.0.0.1:5000)
	$(RUN) sluice up

down: ## stop MLflow and LocalStack
	$(RUN) sluice down

status: ## health of the platform and of every registered version's s3:// artifacts
	$(RUN) sluice status

train: ## train on ROSSMANN_DATA_DIR (or generated data) and register a new version
	$(RUN) sluice train --model $(MODEL)

evaluate: ## gate the newest version against the champion: make evaluate CANDIDATE=3
	$(RUN) sluice evaluate --model $(MODEL) --candidate $(CANDIDATE) --baseline champion

serve: ## serve the champion over KServe V2 on http://127.0.0.1:8080 (gRPC 8081)
	$(RUN) sluice serve --model $(MODEL) --alias champion

image: ## build the runtime image sluice-runtime:<version>-<uv.lock hash> (Docker, else podman)
	bash .ci/build-image.sh $(if $(IMAGE),$(IMAGE))

promote: ## promote a version through Git: make promote VERSION=2
	$(RUN) sluice promote --model $(MODEL) --version $(VERSION)

rollout: ## one canary decision: make rollout METRICS_URL=http://127.0.0.1:8080/metrics
	$(RUN) sluice rollout step --model $(MODEL) $(if $(METRICS_URL),--metrics-url $(METRICS_URL))

history: ## release history from git log
	$(RUN) sluice history --model $(MODEL)

demo: up ## the main job: train v1+v2, promote through Git, canary 10->50->100, a bad v3 rolled back
	$(RUN) python -m pipelines.demo

lint: setup ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

test: lint ## lint, type-check and run every test (starts and stops its own services)
	$(RUN) pytest $(PYTEST_ARGS)

test-fast: lint ## only the tests that start no services
	$(RUN) pytest -m "not integration and not slow" $(PYTEST_ARGS)

bench: ## benchmarks (see docs/benchmarks.md); training needs ROSSMANN_DATA_DIR
	$(RUN) python benchmarks/train.py --data-dir $${ROSSMANN_DATA_DIR:?set ROSSMANN_DATA_DIR to Kaggle data}
	$(RUN) python benchmarks/gitops.py --repeat 3
	$(RUN) python benchmarks/serving.py $(if $(MLSERVER_VENV),--mlserver-venv $(MLSERVER_VENV))

clean: down ## stop services and delete local state (.sluice/: registry, buckets, logs)
	rm -rf .sluice
