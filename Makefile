# Entry points for the repeated commands. `make test` is what CI runs.
PYTHON ?= python3
# docker or podman
CONTAINER ?= docker
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv serve test unit protos models image lint typecheck clean

$(BIN)/switchyard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/switchyard

serve: venv            ## local Triton + bundled models + gateway on :8500
	$(BIN)/switchyard serve

test: venv             ## the whole suite: unit + integration against real Triton and grpcurl
	$(BIN)/python -m pytest

unit: venv             ## fast tests only (no Triton)
	$(BIN)/python -m pytest -m "not integration"

protos: venv           ## regenerate the Python stubs beside the .proto files in protos/switchyard/v1
	$(BIN)/python scripts/gen_protos.py

models: venv           ## build the bundled model repository
	$(BIN)/switchyard models build

image:                 ## the container image of the gateway, Triton and the bundled models (Dockerfile)
	$(CONTAINER) build -t switchyard:latest .

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/python scripts/typecheck.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
