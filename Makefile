# paystream — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) deploy/local/stack.py
# moto accepts any credentials; real deployments get them from the environment / IAM role.
export AWS_ACCESS_KEY_ID ?= test
export AWS_SECRET_ACCESS_KEY ?= test
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help install run test test-unit test-reliability stack-up stack-down lint bench clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,rocksdb]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install paystream with its dev dependencies

stack-up: install  ## start Kafka (jars from Maven Central) and moto S3 on loopback
	$(STACK) start

stack-down:  ## stop Kafka and moto S3
	@test -x $(PY) && $(STACK) stop || true

test: install  ## install everything, start Kafka + moto, run all tests, always stop the services
	@set -o pipefail; \
	$(STACK) start --fresh || { $(STACK) stop; exit 1; }; \
	trap '$(STACK) stop' EXIT; \
	$(PY) -m pytest $(PYTEST_ARGS)

test-reliability: install  ## fault-injection and hostile-input scenarios only (they also run in make test)
	@set -o pipefail; \
	$(STACK) start --fresh || { $(STACK) stop; exit 1; }; \
	trap '$(STACK) stop' EXIT; \
	$(PY) -m pytest -m reliability $(PYTEST_ARGS)

test-unit: install  ## tests that need no broker
	$(PY) -m pytest -m "not kafka and not s3" $(PYTEST_ARGS)

run: install  ## run the whole pipeline locally with demo traffic; Ctrl-C stops everything
	$(PY) deploy/local/run.py

lint: install  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install  ## run every benchmark on the local stack and print one table
	@set -o pipefail; \
	if $(STACK) status >/dev/null 2>&1; then started=0; else started=1; fi; \
	$(STACK) start || { [ $$started = 1 ] && $(STACK) stop; exit 1; }; \
	trap '[ $$started = 1 ] && $(STACK) stop' EXIT; \
	$(PY) -m bench

clean: stack-down  ## remove the virtualenv, caches and local state
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis
