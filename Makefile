# Switchboard: every target installs what it needs (uv from PyPI, then `uv sync`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv itself comes from PyPI when it is not installed yet.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
# `make test`'s and `make test-packages`' worker processes (pytest-xdist), each test module whole
# on one worker: most of the suite waits on servers, timers and browsers rather than the CPU, so
# two workers overlap those waits even on two cores. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
# `make chaos`: every fault, single server and three-node cluster (see tests/chaos/run.py --help).
CHAOS_ARGS ?= --contacts 3000 --rate 100 --agents 16 --cluster
# `make test-packages`: each of these runs its own tests with only itself installed (uv sync
# --package <name> into .venv-packages/<name>), which proves it needs no other service.
PACKAGE_DIRS ?= libs/core libs/cli services/router services/case services/chat \
	services/voice-gateway services/email-ingest services/fax
MYPY_PACKAGES := -p switchboard.core -p switchboard.cli -p switchboard.testing \
	-p switchboard.router -p switchboard.case -p switchboard.chat \
	-p switchboard.voice_gateway -p switchboard.email_ingest -p switchboard.fax

# `make images`: one OCI image per service under build/images/<service> (and <service>.tar for
# `docker load`), tagged IMAGE_TAG (the dev overlay pulls switchboard/<service>:dev).
IMAGES ?= router case chat voice-gateway email-ingest fax
IMAGE_TAG ?= dev
# skopeo and umoci: make images-test reads the images with them too (other readers than ours).
IMAGE_PACKAGES := debootstrap bubblewrap skopeo umoci

# Debian packages the channels need (installed by `make system-deps`; see README).
SYSTEM_PACKAGES ?= dovecot-imapd baresip tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor \
	tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-jpn fonts-noto-cjk chromium hylafax-server \
	kamailio bubblewrap espeak-ng

.PHONY: help uv sync proto proto-check lint boundaries format test test-packages run bench simulate chaos \
	system-deps images images-deps images-test

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "The switchboard command operates a running platform (status, agent, queues, fax upload, report, ...):"
	@echo "  uv run switchboard --help   (and: uv run switchboard COMMAND --help)"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -c "import uv" 2>/dev/null || python3 -m pip install --quiet uv

sync: uv ## install the workspace (uv sync from uv.lock)
	@$(UV) sync --locked --quiet

proto: sync ## regenerate libs/proto from proto/
	@$(UV) run --locked bash scripts/proto_codegen.sh

proto-check: proto ## fail if the generated code is stale
	@git diff --exit-code --stat -- libs/proto && \
	test -z "$$(git status --porcelain -- libs/proto)" || \
	{ echo "libs/proto is stale: run 'make proto' and commit" >&2; exit 1; }

lint: sync ## ruff, mypy and the package boundaries
	@$(UV) run --locked ruff check .
	@$(UV) run --locked ruff format --check .
	@$(UV) run --locked mypy $(MYPY_PACKAGES)
	@$(UV) run --locked python scripts/check_boundaries.py

boundaries: sync ## fail if a service imports or starts another, or a library imports a service
	@$(UV) run --locked python scripts/check_boundaries.py

format: sync ## apply ruff's fixes and formatting
	@$(UV) run --locked ruff check --fix .
	@$(UV) run --locked ruff format .

system-deps: ## install the Debian packages the channels need, if missing
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

test: sync system-deps ## run every test (real nats-server, gRPC, SQLite; PostgreSQL when SWITCHBOARD_TEST_POSTGRES_URL is set)
	@$(UV) run --locked pytest --durations=25 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-packages: uv system-deps ## each package's tests with only that package installed (PACKAGE_DIRS)
	@set -e; for dir in $(PACKAGE_DIRS); do \
	  name=switchboard-$$(basename $$dir); venv=.venv-packages/$$name; \
	  echo "== $$name: $$dir/tests with only $$name installed"; \
	  UV_PROJECT_ENVIRONMENT=$$venv $(UV) sync --locked --quiet --package $$name; \
	  $$venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $$dir/tests $(PYTEST_ARGS); \
	done

run: sync system-deps ## start the whole platform on the embedded defaults
	@$(UV) run --locked switchboard run

bench: sync ## end-to-end and raw-transport figures, written to bench-results.json
	@$(UV) run --locked python bench/run.py

chaos: sync ## kill and restart every process under load, then check every contact (CHAOS_ARGS)
	@$(UV) run --locked python tests/chaos/run.py $(CHAOS_ARGS)

simulate: sync ## routing simulation vs Erlang C and a naive router: table, simulation.png
	@$(UV) run --locked python -m switchboard.router.simulation $(SIMULATE_ARGS)

images-deps: ## install debootstrap, bubblewrap, skopeo and umoci, if missing
	@missing=""; for p in $(IMAGE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

images: sync images-deps ## build one OCI image per service (IMAGES) under build/images, no container engine
	@$(UV) run --locked python scripts/images/make_images.py --tag $(IMAGE_TAG) $(IMAGES)

images-test: images ## run each image's pod from the dev overlay (bubblewrap, uid 10001, read-only root)
	@SWITCHBOARD_IMAGES=build/images SWITCHBOARD_IMAGE_TAG=$(IMAGE_TAG) \
	  $(UV) run --locked pytest tests/deploy/test_images.py $(PYTEST_ARGS)
