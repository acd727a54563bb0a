# posflow — the two commands are `make demo` and `make test`; everything else is a step of those.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test up down status bench lint unit integration clean help compile

help:
	@echo "make demo   set up everything, run the pipeline on a scripted scenario, print a report"
	@echo "make test   set up everything, run ruff, mypy and the tests"
	@echo "make up / down / status   start / stop / show the local stack (Kafka, anvil)"
	@echo "make bench  run the benchmarks; figures are printed and saved under bench/results/"
	@echo "make lint   ruff + mypy only"
	@echo "make compile   build the compiled core (make test, demo and bench run it first)"

# Python packages into a local virtual environment, once (again when pyproject.toml changes).
$(STAMP): pyproject.toml
	@command -v $(PY_BOOT) >/dev/null || { echo "python3 (>= 3.11) is needed: apt-get install python3 python3-venv"; exit 1; }
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (once)..."
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The core compiled by mypyc (processors/__init__.py); quick when the build matches the sources.
compile: $(STAMP)
	@$(PY) deploy/local/compile_core.py

up: $(STAMP)
	@deploy/local/up.sh

down:
	@deploy/local/down.sh

status:
	@deploy/local/kafka.sh status; deploy/local/anvil.sh status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy streams schemas processors sinks bench tests deploy/local/compile_core.py

unit: compile
	$(PY) -m pytest -m "not integration" tests

# The test fixtures start what the tests need (and stop it) unless it already runs.
test: lint compile
	@deploy/local/kafka.sh fetch && deploy/local/anvil.sh install
	POSFLOW_EXPECT_COMPILED=1 $(PY) -m pytest tests

demo: compile
	@$(PY) -m streams.demo

bench: compile
	@$(PY) -m bench.run $(BENCH)

clean: down
	rm -rf .local
