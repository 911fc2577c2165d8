# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install services env migrate run test test-fast test-reliability soak lint format bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services:
	@bash .ci/services.sh

# A development .env from the example, only if there is none yet.
.env:
	cp .env.example .env
	@echo "created .env from .env.example: set CHAT2DESK_API_TOKEN for real replies"

env: .env

migrate: install services env
	$(BIN)/orderbot migrate

run: migrate
	$(BIN)/orderbot run

test: install services
	$(BIN)/pytest

# The fault and load suite (tests/reliability): every scenario for a few seconds of load
# each, the fuzzer and the overload test; a few minutes. CI runs it after `make test`.
test-reliability: install services
	$(BIN)/pytest -m reliability tests/reliability

# Every fault at once for RELIABILITY_SECONDS (default 10 min), the running books every
# minute; then the books are closed. RELIABILITY_SEED replays a run's random moments.
RELIABILITY_SECONDS ?= 600
soak: install services
	RELIABILITY_SECONDS=$(RELIABILITY_SECONDS) RELIABILITY_REPORT_EVERY=60 \
	  $(BIN)/pytest -m reliability -s --timeout=0 \
	  "tests/reliability/test_books.py::test_the_books_balance_under_faults[all]"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install services
	$(BIN)/python -m bench.all

bench-quick: install services
	$(BIN)/python -m bench.all --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
