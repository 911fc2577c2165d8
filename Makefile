# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: running needs only the package (`make run` installs no pytest, mypy or
# matplotlib); the tests, lint and benchmarks add the [dev] extra on top.
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.PHONY: install install-dev services services-for-tests env migrate run test test-reliability test-ha soak lint format settings-docs bench bench-quick bench-peer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

# Starts a service only if it is installed here and stopped; never stops or restarts one.
services:
	@bash .ci/services.sh

# The same, but a service that does not answer while Docker is present is left to the
# test suite, which starts it with testcontainers.
services-for-tests:
	@bash .ci/services.sh --for-tests

# A development .env from the example, only if there is none yet.
.env:
	cp .env.example .env
	@echo "created .env from .env.example: set CHAT2DESK_API_TOKEN for real replies"

env: .env

migrate: install services env
	$(BIN)/orderbot migrate

# ORDERBOT_DEV: the example secrets of .env.example are fine here, and nowhere else.
run: migrate
	ORDERBOT_DEV=1 $(BIN)/orderbot run

test: install-dev services-for-tests
	$(BIN)/pytest

# The fault and load suite (tests/reliability): every scenario for a few seconds of load
# each, the fuzzer and the overload test; a few minutes. CI runs it after `make test`.
test-reliability: install-dev services-for-tests
	$(BIN)/pytest -m reliability tests/reliability

# Clustered engines started on this host by the tests (tests/ha): a RabbitMQ node
# stopped under load, and the processes moving to the others; Redis Sentinel, PgBouncer.
# CI runs it after test-reliability (docs/scaling.md: what its node stop once found).
test-ha: install-dev services-for-tests
	$(BIN)/pytest -m ha tests/ha

# Every fault at once for RELIABILITY_SECONDS (default 10 min), the running books every
# minute; then the books are closed. RELIABILITY_SEED replays a run's random moments.
RELIABILITY_SECONDS ?= 600
soak: install-dev services-for-tests
	RELIABILITY_SECONDS=$(RELIABILITY_SECONDS) RELIABILITY_REPORT_EVERY=60 \
	  $(BIN)/pytest -m reliability -s --timeout=0 \
	  "tests/reliability/test_books.py::test_the_books_balance_under_faults[all]"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# README's settings table and .env.example, rendered from orderbot/config/settings.py.
settings-docs: install
	$(BIN)/orderbot settings --markdown --into README.md
	$(BIN)/orderbot settings --env-example --into .env.example

bench: install-dev services
	$(BIN)/python -m bench.all

bench-quick: install-dev services
	$(BIN)/python -m bench.all --quick

# orderbot next to the seed it replaces (bench/peer.py): PEER_SEED_DIR names a local clone
# of it, built with bun (PEER_BUN, or bun on PATH). Not part of `make test` or CI.
bench-peer: install-dev services
	$(BIN)/python -m bench.peer

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
