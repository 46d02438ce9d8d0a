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
# The Go tools the deploy tests run (tests/deploy/go_tools.py finds them in .cache/tools/bin/). Built once per
# machine from the Go module proxy; a version bump here builds the new version on the next make test.
TOOLS := .cache/tools
KUSTOMIZE_VERSION := v5.7.1
PROMTOOL_VERSION := v0.316.0

.PHONY: help install tools run test test-unit test-reliability stack-up stack-down lint bench clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install paystream with its dev dependencies

# go install PACKAGE@VERSION into $(TOOLS)/NAME-VERSION/, then point $(TOOLS)/bin/NAME at it. File targets:
# nothing is built when the binary of that version exists. A Go older than the tool's go.mod asks for
# fetches that Go toolchain from the module proxy first (Go's default GOTOOLCHAIN=auto).
# $(call go-tool,NAME,PACKAGE,VERSION,EXTRA go install FLAGS)
define go-tool
$(TOOLS)/$(1)-$(3)/$(1):
	@command -v go >/dev/null || { echo "make: Go (1.21 or newer) is needed to build $(1) for the deploy tests; see the README's prerequisites" >&2; exit 1; }
	@echo "building $(1) $(3) into $(TOOLS)/ (first run on this machine only)"
	GOBIN=$(CURDIR)/$(TOOLS)/$(1)-$(3) go install $(4) $(2)@$(3) \
	  || { echo "make: could not build $(1) $(3) with $$$$(go version); the deploy tests need it" >&2; exit 1; }

$(TOOLS)/bin/$(1): $(TOOLS)/$(1)-$(3)/$(1)
	@mkdir -p $(TOOLS)/bin
	ln -sfn ../$(1)-$(3)/$(1) $$@
endef
$(eval $(call go-tool,kustomize,sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION)))
# remove_all_sd leaves out the cloud service-discovery plugins (AWS, Azure, GCE, ...) that rule checks and
# rule tests never use: the first build takes about half the time.
$(eval $(call go-tool,promtool,github.com/prometheus/prometheus/cmd/promtool,$(PROMTOOL_VERSION),\
  -tags remove_all_sd -ldflags=-X=github.com/prometheus/common/version.Version=$(PROMTOOL_VERSION:v%=%)))

tools: $(TOOLS)/bin/kustomize $(TOOLS)/bin/promtool  ## build kustomize and promtool (Go) into .cache/tools/ once

stack-up: install  ## start Kafka (jars from Maven Central) and moto S3 on loopback
	$(STACK) start

stack-down:  ## stop Kafka and moto S3
	@test -x $(PY) && $(STACK) stop || true

test: install tools  ## install everything, start Kafka + moto, run all tests, always stop the services
	@set -o pipefail; \
	$(STACK) start --fresh || { $(STACK) stop; exit 1; }; \
	trap '$(STACK) stop' EXIT; \
	$(PY) -m pytest $(PYTEST_ARGS)

test-reliability: install  ## fault-injection and hostile-input scenarios only (they also run in make test)
	@set -o pipefail; \
	$(STACK) start --fresh || { $(STACK) stop; exit 1; }; \
	trap '$(STACK) stop' EXIT; \
	$(PY) -m pytest -m reliability $(PYTEST_ARGS)

test-unit: install tools  ## tests that need no broker
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
