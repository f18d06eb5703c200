# stickylab: `make run` starts a local cluster, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
SWIFT ?= swift
SWIFT_BUILD_FLAGS ?=
CONFIG ?= Configs/cluster.yml
PYTHON := .venv/bin/python
RELEASE_BIN := .build/release
DEBUG_BIN := .build/debug

.PHONY: all deps deps-run build build-release run test test-python screenshots bench fuzz lint format clean

all: build

## deps: everything, only when missing: Debian packages (Redis, hiredis, Node, chromium, HAProxy, nginx,
## wrk, ...), the test clients in the Python venv .venv and the socket.io client bundle in .deps.
## deps-run: only what building and `make run` need: hiredis, redis-server and the socket.io client
## bundle (scripts/deps.sh --list run names the Debian packages).
deps:
	@scripts/deps.sh all

deps-run:
	@scripts/deps.sh run

build: deps-run
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

build-release: deps-run
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS)

## run: build in release mode and start a local cluster (Redis, instances, proxy); Ctrl-C stops it all.
## RUN_ARGS: more flags for `cluster up`, e.g. make run RUN_ARGS="--port 8081 --instances 5".
run: build-release
	$(RELEASE_BIN)/cluster up --config $(CONFIG) $(RUN_ARGS)

## test: every test: Swift unit, integration and end-to-end tests, then the interop and browser tests.
## Swift tests run one at a time: the protocol suites use short real heartbeat intervals, and 240
## tests at once on a shared 2-core machine starve them; serial, the whole suite takes about 15 s.
## Tests run with SwiftNIO's strict mode: a task scheduled on an event loop that has shut down is then a
## crash (a failed test), not a line on standard error that a passing test hides.
test test-python: export SWIFTNIO_STRICT := 1

## Programs a killed test run left running (marked STICKYLAB_TEST_RUN) are stopped first.
test: deps
	@$(PYTHON) Tests/python/leftovers.py
	$(SWIFT) build --build-tests $(SWIFT_BUILD_FLAGS)
	$(SWIFT) test --skip-build --no-parallel $(SWIFT_BUILD_FLAGS)
	$(MAKE) --no-print-directory test-python

## A test that hangs fails after this many seconds (with its stack), instead of holding CI for good.
PYTEST_TIMEOUT ?= 600
PYTHON_TEST_DIRS := $(wildcard Tests/interop Tests/proxy Tests/chat Tests/browser Tests/cluster Tests/acceptance Tests/bench)

test-python: deps
	@if [ -n "$(PYTHON_TEST_DIRS)" ]; then \
		STICKYLAB_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q -p no:cacheprovider --timeout $(PYTEST_TIMEOUT) $(PYTHON_TEST_DIRS); \
	else echo "no Python test folders yet"; fi

## screenshots: refresh the README's screenshots (docs/images) with the browser test.
screenshots: deps
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)
	STICKYLAB_SCREENSHOTS=docs/images STICKYLAB_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q -p no:cacheprovider Tests/browser

## bench: benchmarks against references measured in the same run; figures go to docs/benchmarks.md.
## It builds in its recipe rather than depending on build-release, so that the full deps come first.
bench: deps
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS)
	STICKYLAB_BIN=$(RELEASE_BIN) $(PYTHON) bench/run.py $(BENCH)

## fuzz: libFuzzer + AddressSanitizer on the parsers of outside input (docs/fuzzing.md).
## FUZZ=http-request,json picks targets (FUZZ=list names them), FUZZ_SECONDS=60 per target.
fuzz: deps
	@scripts/fuzz.sh

lint:
	$(SWIFT) format lint --strict --recursive --parallel Package.swift Sources Tests

format:
	$(SWIFT) format --in-place --recursive --parallel Package.swift Sources Tests

clean:
	rm -rf .build .build-fuzz .state
