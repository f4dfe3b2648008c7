# Cog-packaged, optimized model deployments. `make help` lists the targets.
#   make demo                      every deployment, real Cog server, tiny weights, outputs/ (sets itself up)
#   make test                      unit, integration and canary tests on CPU (sets itself up)
#   make lint                      ruff (rules in pyproject.toml)
#   make predict D=<deployment> I='prompt="a red fox" trigger_word=Anime'
#   make serve D=<deployment>      the Cog server on http://127.0.0.1:5000 (POST /predictions); GUARD=1 behind shared.request_guard
#   make canary STABLE=<target> CANDIDATE=<target> [D=<deployment>] [ARGS=--dry-run]
#                                  compare a candidate with stable (Cog URL, owner/model:version, deployment:owner/name)
#   make <deployment>              that deployment's example request through the Cog server -> outputs/
#   make setup                     only create .venv (CPU torch); the targets above do it when needed
#   make test-unit | test-integration | test-canary    one tier of `make test`
#   make test-gpu                  the optimized paths on a CUDA GPU, synthetic weights (the device machine)
#   make schemas | check-schemas   write / check deployments/*/.cog/openapi_schema.json
#   make docs                      the docs site (MkDocs Material) into outputs/site, --strict; `make docs-serve` to read it
#   make clean                     remove outputs/ and pytest's cache

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEIGHT_PROFILE ?= tiny
export WEIGHT_PROFILE
DEPLOYMENTS := $(notdir $(wildcard deployments/*))

.PHONY: help setup demo docs docs-serve test test-unit test-integration test-canary canary test-gpu predict serve schemas check-schemas lint clean $(DEPLOYMENTS)

help:
	@sed -n 's/^#   //p' Makefile
	@echo "deployments: $(DEPLOYMENTS)"

# The CPU environment: its own venv, CPU torch pinned by a constraints file (never a CUDA wheel here).
# torch comes first, from PyTorch's CPU index where that can be reached: PyPI's torch is the multi-GB CUDA
# build, and the index's 2.13.0+cpu sorts above it. Where the index cannot be reached (a machine with only
# PyPI and a local CPU wheel), pip says so once and takes what it finds; the rest then keeps that torch.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(STAMP): requirements/cpu.txt requirements/constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --retries 0 --timeout 20 -c requirements/constraints-cpu.txt \
		--extra-index-url $(TORCH_INDEX) torch
	$(PY) -m pip install --quiet -c requirements/constraints-cpu.txt -r requirements/cpu.txt
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m shared.cogserver demo

test: $(STAMP) docs
	$(PY) -m pytest tests/unit tests/integration tests/canary tests/gpu

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

# Tier 3: the canary against real Cog servers on tiny weights, with planted regressions.
test-canary: $(STAMP)
	$(PY) -m pytest tests/canary

# On a GPU machine, synthetic weights: the optimized paths (compile, fp8/int8, Pruna, Unsloth).
test-gpu:
	WEIGHT_PROFILE=synthetic $(PYTHON) -m pytest -m gpu tests/gpu

predict: $(STAMP)
	@test -n "$(D)" || { echo "usage: make predict D=<deployment> I='key=value ...'  (deployments: $(DEPLOYMENTS))"; exit 2; }
	$(PY) -m shared.cogserver predict $(D) -I '$(I)' $(if $(I),,--example)

serve: $(STAMP)
	@test -n "$(D)" || { echo "usage: make serve D=<deployment>  (deployments: $(DEPLOYMENTS))"; exit 2; }
	$(PY) -m shared.cogserver serve $(D) --port $(or $(PORT),5000) $(if $(GUARD),--guard)

# One target per deployment, e.g. `make smollm3-3b`: its example request through the Cog server.
$(DEPLOYMENTS): $(STAMP)
	$(PY) -m shared.cogserver predict $@ --example

# STABLE defaults to the deployment's pin in canary/pins.json. Exit 1 on a regression (docs/canary.md).
canary: $(STAMP)
	@test -n "$(CANDIDATE)" || { echo "usage: make canary CANDIDATE=<target> [STABLE=<target>] [D=<deployment>] [ARGS=...]"; exit 2; }
	$(PY) -m canary --candidate '$(CANDIDATE)' $(if $(STABLE),--stable '$(STABLE)') $(if $(D),--deployment $(D)) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

schemas: $(STAMP)
	$(PY) -m shared.schema

check-schemas: $(STAMP)
	$(PY) -m shared.schema --check

# Pages are generated from the README, the committed schemas, the catalog and benchmarks/results/
# (docs/_site/hooks.py); --strict fails the build on a broken link or a missing page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=. $(PY) -m mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=. $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf outputs .pytest_cache
