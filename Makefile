# ml-playground: the user's verbs. Every target sets up .venv first; ARGS are Hydra overrides, e.g.
#   make exp1-dcgan ARGS="data=fruits360_real trainer=cpu_real"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
TRAIN := $(PY) experiments/train.py

.DEFAULT_GOAL := help
.PHONY: help setup test test-slow exp1-dcgan exp2-dcgan exp3-dcgan sweep-dcgan mlflow-ui bench-dcgan clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'
	@echo '  ARGS="..."               Hydra overrides for any target, e.g. ARGS="trainer=gpu" or ARGS="data=fruits360_real"'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project with its pinned stack

test: $(STAMP) ## run the test suite (real-data tests skip when ../shared/data is absent)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## run the long tests (real-data trainings, full sweeps)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

exp1-dcgan: $(STAMP) ## DCGAN experiment 1: original net on simple scenes (fruits)
	$(TRAIN) experiment=exp1_dcgan_fruits $(ARGS)

exp2-dcgan: $(STAMP) ## DCGAN experiment 2: same net on complicated scenes (hard-hat workers)
	$(TRAIN) experiment=exp2_dcgan_hardhat $(ARGS)

exp3-dcgan: $(STAMP) ## DCGAN experiment 3: deeper net + training tricks on complicated scenes
	$(TRAIN) experiment=exp3_dcgan_hardhat_tricks $(ARGS)

sweep-dcgan: $(STAMP) ## Hydra multirun: batch size x learning rate for exp3, grouped in MLflow
	$(TRAIN) experiment=exp3_dcgan_hardhat_tricks sweep=dcgan_grid $(ARGS)

mlflow-ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the local store
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

bench-dcgan: $(STAMP) ## images/s of the Lightning DCGAN step vs a plain PyTorch loop
	$(PY) benchmarks/dcgan_throughput.py $(ARGS)

clean: ## remove generated data, logs, caches and the local MLflow store
	rm -rf data logs .cache mlruns mlflow.db
