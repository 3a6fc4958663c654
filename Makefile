# Two commands do all the set-up: `make demo` (the quickstart experiment) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

.PHONY: demo test test-slow test-all install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first (the CPU build that lies on this machine), then the project with its test extras.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/dfl run experiments/quickstart.toml --out runs/quickstart --overwrite
	$(BIN)/dfl report runs/quickstart --markdown

test: install
	$(BIN)/python -m pytest -q -m "not slow"

# Process-level tests: Flower deployments (SuperLink + SuperNodes, TLS, node auth, a killed node),
# Flower's simulation, joining a Ray cluster, 1,000 clients. About 9 minutes on 2 cores.
test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-all: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
