# mg: every target works on a fresh machine; the first one that needs the virtualenv creates it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
GEN     = gen
PROTOS  = $(shell find proto -name '*.proto')
INSTALLED = $(VENV)/.installed
GENERATED = $(GEN)/.generated
CONSTRAINTS = .ci/constraints.txt

.PHONY: install lock proto run test check lint typecheck proto-ts bench bench-usage console-screenshot clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c $(CONSTRAINTS)
	touch $@

# Pin what is installed now (after a dependency change in pyproject.toml): every machine and CI then
# install exactly these versions.
lock: $(INSTALLED)
	{ sed -n '1,2p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable | grep -iv '^mg.gateway'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

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

# The suite runs in parallel (pytest-xdist): it mostly waits on gateway start-ups, timers and sockets,
# so more workers than cores pay; with 6 the run is bound by CPU on 2 cores (measured: -n 6 ~10.5 min,
# -n 4 ~11 min, one process ~30 min). `--dist load`, not loadfile: test_enforcement.py and the other
# long files would each run on one worker. `make test TEST_WORKERS=0` runs the suite in one process;
# a plain `.venv/bin/pytest FILE` runs serially.
# The bytecode first: the tests start hundreds of Python processes (gateways, their workers, `mg`
# commands), and where PYTHONDONTWRITEBYTECODE is set each one compiled the service from source
# (about a third of an `mg` command's CPU).
TEST_WORKERS ?= 6
test: proto check
	$(BIN)/python -m compileall -q service gen/python
	$(BIN)/pytest -n $(TEST_WORKERS) --dist load

# Not part of `make test`: wrk loads the gateway and a fake upstream on loopback (see tests/bench/bench.py).
bench: proto
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python tests/bench/bench.py

# Not part of `make test`: `mg usage` and `mg ledger` over 1,000,000 generated ledger rows in SQLite and
# in PostgreSQL (127.0.0.1:5432, a database of its own, dropped after); see tests/bench/ledger_scale.py.
bench-usage: proto
	$(BIN)/python tests/bench/ledger_scale.py

# The README's picture of the console (docs/console.png): the browser test's screenshot of the overview.
console-screenshot: proto
	MG_CONSOLE_SCREENSHOT=$(CURDIR)/docs/console.png $(BIN)/pytest -q -p no:cacheprovider \
	  tests/console/test_console_browser.py -k spend_bar

clean:
	rm -rf $(GEN) $(VENV) .mypy_cache .pytest_cache .ruff_cache
