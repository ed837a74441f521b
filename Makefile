# Two commands matter: `make run` serves, `make test` runs every test.
# Both create the virtual environment they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(shell find protos -name '*.proto')
LISTEN ?= 127.0.0.1:50051

.PHONY: run test demo generate check-generated lint typecheck clean dev-upstream

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## run: serve on $(LISTEN) against $$BRIDGE_UPSTREAM_URL (default: the Vercel AI Gateway)
run: $(STAMP)
	$(BIN)/python -m bridge serve --listen $(LISTEN)

## test: every test (unit, integration, generated-code freshness)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## demo: local development upstream + bridge + a client streaming a chat, all offline
demo: $(STAMP)
	$(BIN)/python -m bridge demo

## dev-upstream: the local OpenAI-compatible development upstream on 127.0.0.1:8080
dev-upstream: $(STAMP)
	$(BIN)/python -m bridge dev-upstream --listen 127.0.0.1:8080

## generate: regenerate generated/ from protos/ with the pinned grpcio-tools
generate: $(STAMP)
	$(BIN)/python -m bridge.codegen

lint: $(STAMP)
	$(BIN)/ruff check bridge tests
	$(BIN)/ruff format --check bridge tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
