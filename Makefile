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

# axe-core, the accessibility checker the browser tests run inside Chromium (from npm, when npm
# is here; without it those tests are skipped on a laptop and fail in CI).
AXE_VERSION := 4.14.1
AXE := $(VENV)/axe/node_modules/axe-core/axe.min.js

$(AXE): $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix $(VENV)/axe --no-save --no-audit --no-fund --silent axe-core@$(AXE_VERSION); \
	else echo "npm not found: the accessibility checks will be skipped"; fi

run: $(STAMP)
	$(BIN)/dripcourse init
	$(BIN)/dripcourse demo
	$(BIN)/dripcourse run

test: $(STAMP) $(AXE)
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
	DRIPCOURSE_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_circle_browser.py

clean:
	rm -rf var .pytest_cache
