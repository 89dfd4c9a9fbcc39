# Sluice: every target a newcomer needs. `make help` lists them.
# Settings are env vars (see pipelines/config.py); the defaults run everything on this machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv on PATH, else the uv module `make setup` installs with pip (no assumption about where scripts go).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
MODEL ?= rossmann
PYTEST_ARGS ?=

.PHONY: help setup up down status train evaluate serve drift feedback image image-inference-log image-pipelines demo test test-fast lint format security bench history ci-log ci-jobs clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## .venv from uv.lock (act included), LocalStack's and checkov's own virtualenvs, Prometheus and the Pushgateway where apt-get works
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	$(RUN) python -c "from pipelines.config import load_settings; from pipelines.platform.localstack import ensure_localstack_venv; ensure_localstack_venv(load_settings())"
	@$(RUN) python -c "from pipelines.config import load_settings; from pipelines.security.checkov import ensure_checkov_venv; ensure_checkov_venv(load_settings())" \
		|| echo "checkov could not be installed: its test skips (see docs/security.md)"
	@command -v prometheus >/dev/null 2>&1 || [ -n "$$SLUICE_PROMETHEUS_BIN" ] || ! command -v apt-get >/dev/null 2>&1 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
		|| echo "prometheus could not be installed: canaries will hold (see docs/platform.md)"
	@command -v prometheus-pushgateway >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-pushgateway >/dev/null) \
		|| echo "prometheus-pushgateway could not be installed: drift figures reach no Prometheus (docs/monitoring.md)"

up: setup ## start S3, MLflow, Prometheus, the GitOps remote (.sluice/gitops.git), CI runner and cluster stand-in
	$(RUN) sluice up

down: ## stop everything `make up` started (state in .sluice/ is kept)
	$(RUN) sluice down

status: ## services, what serves per model, the last CI jobs, every version's artifacts
	$(RUN) sluice status

train: ## train on ROSSMANN_DATA_DIR (or generated data) and register a new version
	$(RUN) sluice train --model $(MODEL)

evaluate: ## gate the newest version against the champion: make evaluate CANDIDATE=3
	$(RUN) sluice evaluate --model $(MODEL) --candidate $(CANDIDATE) --baseline champion

serve: ## serve the champion alone over KServe V2 on http://127.0.0.1:8081 (gRPC 8082)
	$(RUN) sluice serve --model $(MODEL) --alias champion --port 8081 --grpc-port 8082

image: ## build the runtime image sluice-runtime:<version>-<uv.lock hash> (Docker, else podman)
	bash .ci/build-image.sh $(if $(IMAGE),$(IMAGE))

image-inference-log: ## build the inference-log receiver's image sluice-inference-log:<version>-<uv.lock hash>
	SLUICE_IMAGE_DOCKERFILE=serving/inference_log/Dockerfile SLUICE_IMAGE_NAME=sluice-inference-log \
		bash .ci/build-image.sh $(if $(IMAGE),$(IMAGE))

image-pipelines: ## build the console and batch-jobs image sluice-pipelines:<version>-<uv.lock hash>
	SLUICE_IMAGE_DOCKERFILE=pipelines/Dockerfile SLUICE_IMAGE_NAME=sluice-pipelines \
		bash .ci/build-image.sh $(if $(IMAGE),$(IMAGE))

drift: ## drift of the champion's logged traffic (last 7 days) against its reference sample: make drift [VERSION=N]
	$(RUN) sluice drift --model $(MODEL) $(if $(VERSION),--version $(VERSION))

feedback: ## realized RMSPE per version from actual sales: make feedback ACTUALS=path-or-s3-uri.csv
	$(RUN) sluice feedback --model $(MODEL) --actuals $(ACTUALS)

history: ## release history from the GitOps remote's commits
	$(RUN) sluice history --model $(MODEL)

ci-log: ## follow the newest CI job of the local runner
	$(RUN) sluice ci log -f

ci-jobs: ## the local CI runner's jobs
	$(RUN) sluice ci jobs

demo: up ## the main job, by git push only: release v1, canary v2 to 100%, a bad v3 refused, then forced and rolled back
	$(RUN) python -m pipelines.platform.demo

lint: ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

test: setup lint ## lint, type-check and run every test (starts and stops its own services)
	$(RUN) pytest $(PYTEST_ARGS)

test-fast: setup lint ## only the tests that start no services
	$(RUN) pytest -m "not integration and not slow" $(PYTEST_ARGS)

security: ## no secret in any commit of the Git history (detect-secrets), checkov on terraform/ and the manifests
	$(RUN) python -m pipelines.security.history
	$(RUN) python -m pipelines.security.checkov

bench: ## benchmarks (see docs/benchmarks.md); training needs ROSSMANN_DATA_DIR
	$(RUN) python benchmarks/train.py --data-dir $${ROSSMANN_DATA_DIR:?set ROSSMANN_DATA_DIR to Kaggle data}
	$(RUN) python benchmarks/gitops.py --repeat 3
	$(RUN) python benchmarks/serving.py $(if $(MLSERVER_VENV),--mlserver-venv $(MLSERVER_VENV))
	$(RUN) python benchmarks/console.py

clean: down ## stop services and delete local state (.sluice/: registry, buckets, GitOps remote, logs)
	rm -rf .sluice
