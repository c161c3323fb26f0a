# dripcourse: `make run` starts the scheduler on its embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-parts screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,prod]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dripcourse init
	$(BIN)/dripcourse demo
	$(BIN)/dripcourse run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Throughput against the raw SMTP limit, in one run (PostgreSQL + Redis needed); BENCH_ARGS=--quick
# for a short check. Takes minutes and loads the machine: never part of the tests.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# The older per-step benchmark: render, claim and inline send on SQLite and PostgreSQL.
bench-parts: $(STAMP)
	$(BIN)/python benchmarks/bench_send.py

screenshots: $(STAMP)
	$(BIN)/python -m tests.browser docs

clean:
	rm -rf var .pytest_cache
