# mg: every target works on a fresh machine; the first one that needs the virtualenv creates it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
GEN     = gen
PROTOS  = $(shell find proto -name '*.proto')
INSTALLED = $(VENV)/.installed
GENERATED = $(GEN)/.generated

.PHONY: install proto run test check lint typecheck proto-ts bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Stubs are generated at install time, not committed: they must match the installed protobuf/grpcio
# runtime exactly, and a generated tree in git only invites drift. See proto/README.md.
proto: $(GENERATED)

$(GENERATED): $(INSTALLED) $(PROTOS) proto/generate.sh
	VENV=$(VENV) OUT=$(GEN) proto/generate.sh
	touch $@

# TypeScript stubs for Node callers (protoc-gen-es) in gen/typescript; needs node and npm.
# tests/clients/ generates them the same way and calls the gateway with them.
proto-ts: $(INSTALLED)
	VENV=$(VENV) OUT=$(GEN) proto/generate.sh typescript

run: proto
	$(BIN)/mg serve

check: lint typecheck

lint: proto
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests

typecheck: proto
	$(BIN)/mypy

test: proto check
	$(BIN)/pytest

# Not part of `make test`: wrk loads the gateway and a fake upstream on loopback (see tests/bench/bench.py).
bench: proto
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python tests/bench/bench.py

clean:
	rm -rf $(GEN) $(VENV) .mypy_cache .pytest_cache .ruff_cache
