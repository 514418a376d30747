# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/gateway: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: demo test lint serve check bench
demo: $(BIN)/gateway
	$(BIN)/gateway demo

test: lint
	$(BIN)/python -m pytest

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

check: $(BIN)/gateway
	$(BIN)/gateway check --config config/gateway.yaml

bench: $(BIN)/gateway
	$(BIN)/python -m bench
