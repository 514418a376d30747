# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/gateway: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: demo test lint serve check bench test-servers test-clients test-k8s
demo: $(BIN)/gateway
	$(BIN)/gateway demo

test: lint test-servers test-clients test-k8s
	$(BIN)/python -m pytest

# Servers the tests run for real, from Debian's packages: installed when missing and we are root;
# otherwise their tests are skipped, loudly.
test-servers:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q prometheus >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }; }; } || \
	  echo "!!! prometheus is not installed and cannot be here: tests/test_prometheus.py will be SKIPPED !!!"
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q redis-server >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; }; } || \
	  echo "!!! redis-server is not installed and cannot be here: the Redis tests of tests/test_state*.py will be SKIPPED !!!"

# kubectl renders deploy/k8s (`kubectl kustomize`) for tests/test_k8s.py: any kubectl will do (no
# cluster is ever contacted); Debian's kubernetes-client when none is installed and we are root;
# otherwise that test is skipped, loudly.
test-k8s:
	@command -v kubectl >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q kubernetes-client >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q kubernetes-client >/dev/null; }; }; } || \
	  echo "!!! kubectl is not installed and cannot be here: tests/test_k8s.py will be SKIPPED !!!"

# The real clients the front doors are held to (issues 12, 13), from npm, pinned, into .clients/:
# their tests are skipped, loudly, when npm is missing.
CLIENTS := @anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0
test-clients:
	@test -x .clients/node_modules/.bin/claude -a -x .clients/node_modules/.bin/codex || \
	  { command -v npm >/dev/null && mkdir -p .clients && \
	    npm install -s --no-audit --no-fund --prefix .clients $(CLIENTS) >/dev/null; } || \
	  echo "!!! npm is missing: tests/test_claude_code.py will be SKIPPED !!!"

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

check: $(BIN)/gateway
	$(BIN)/gateway check --config config/gateway.yaml

bench: $(BIN)/gateway
	$(BIN)/python -m bench
