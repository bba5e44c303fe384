# The two quick-start commands (README): `make demo` and `make test`. Each creates .venv if needed and
# installs exactly the versions pinned in requirements.lock (pyproject.toml keeps the ranges).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test lint lock

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements.lock -e '.[test,bench]'
	touch $(STAMP)

# herald and its tools in .venv, at the locked versions (the production setup in the README starts here).
install: $(STAMP)

# The whole pipeline on the embedded default (SQLite state and broker in .herald/): no services needed.
demo: $(STAMP)
	$(VENV)/bin/herald demo

# The test suite in its two tiers: tests/unit (no services, seconds), then tests/integration (with the benchmark
# harness smoke test and the fault drills), which needs PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and,
# for the RabbitMQ tests, RabbitMQ (127.0.0.1:5672); .ci/run starts them. The fault drills (tests/integration/drills)
# run in a second pytest process beside the rest, and the rest's files in two processes (pytest-xdist, a file per
# process at a time): each process has its own database and Redis prefix, and a drill breaks only the broker or
# proxy it started itself. The drills' output follows the rest's. The API's schema run (schemathesis: its cases share
# one test id, which xdist would run as one) goes with the drills.
test: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit
	@$(VENV)/bin/pytest -q -p no:cacheprovider tests/integration/test_api_schema.py tests/integration/drills \
		> .drills.log 2>&1 & drills=$$!; \
	$(VENV)/bin/pytest -q -n 2 --dist loadfile tests/integration --ignore=tests/integration/drills \
		--ignore=tests/integration/test_api_schema.py; rest=$$?; \
	wait $$drills; status=$$?; echo "--- tests/integration/drills and test_api_schema.py"; cat .drills.log; \
	rm -f .drills.log; test $$rest -eq 0 -a $$status -eq 0
	$(VENV)/bin/pytest -q tests/browser

# ruff, mypy (the packages, the tests, the bench harness) and the layers contract (lint-imports): all in pyproject.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Refresh requirements.lock after changing a range in pyproject.toml (or to take newer versions):
# pins that still fit are kept; `make lock LOCK_FLAGS=--upgrade` takes the newest every range allows.
# Every platform, every extra.
lock:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --custom-compile-command "make lock" \
		--annotation-style line $(LOCK_FLAGS) -o requirements.lock
