# The two quick-start commands (README): `make demo` and `make test`. Each creates .venv if needed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# The whole pipeline on the embedded default (SQLite state and broker in .herald/): no services needed.
demo: $(STAMP)
	$(VENV)/bin/herald demo

# The test suite (with the benchmark harness smoke test): needs PostgreSQL (127.0.0.1:5432), Redis
# (127.0.0.1:6379) and, for the RabbitMQ backlog tests, RabbitMQ (127.0.0.1:5672); .ci/run starts them.
test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
