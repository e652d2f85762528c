# Shipa: every target sets up what it needs. `make run` and `make test` work on a fresh clone.
# A GPU user overrides the torch build, e.g.: make run TORCH_SPEC="torch==2.13.0 --index-url <cuda wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.shipa-installed

# Sovereign and reproducible defaults (see README "Configuration").
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install deps run serve test test-browser test-servers test-fast lint format typecheck bench lock clean-data help mlflow-ui

help:
	@echo "make run     - set up .venv and run the whole pipeline (dvc repro) on the built-in cohort"
	@echo "make test    - set up .venv and run the test suite"
	@echo "make deps    - regenerate dvc.yaml's code deps and params from each stage's import closure"
	@echo "make lint    - ruff check + format check + mypy"
	@echo "make bench   - run the benchmarks under benchmarks/"
	@echo "make mlflow-ui - the MLflow UI on 127.0.0.1:$(MLFLOW_PORT)"
	@echo "make serve   - the inference service on 127.0.0.1:8000 (champion models, FHIR in and out)"
	@echo "make lock    - refresh constraints.txt from the current .venv"

install: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml or the lock changed. Torch first, so the pinned CPU build is
# used and pip never pulls a multi-GB CUDA build by accident.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# dvc.yaml's code deps and params come from each stage's import closure (pipelines/stage_deps.py); the test suite
# fails while the committed dvc.yaml is stale.
deps: $(STAMP)
	$(BIN)/python -m pipelines.stage_deps

# Every stage of one `make run` nests its MLflow run under one parent run.
run: export SHIPA_PIPELINE_RUN_ID ?= make-$(shell date -u +%Y%m%dT%H%M%SZ)
run: deps
	$(BIN)/dvc repro
	@echo
	@echo "Pipeline up to date. Results:"
	@echo "  raw cohort        data/raw/ (datasheet: data/raw/datasheet.md)"
	@echo "  ingest tables     data/interim/tables/  report: data/interim/ingest_report.json"
	@echo "  quarantine        data/interim/quarantine/"
	@echo "  diagnosis         models/diagnosis/metrics.json, plots in models/diagnosis/eval/"
	@echo "  MLflow            $(MLFLOW_TRACKING_URI) (make mlflow-ui)"
	@echo "  fraud             models/fraud/metrics.json, worklists: shipa fraud worklist --date YYYY-MM-DD"
	@echo
	@$(BIN)/shipa results

# The browser tests need Debian's chromium (and chromium-driver for the pages a clinician types into); install them
# when we can (root with apt), else they skip.
CHROMIUM ?= /usr/bin/chromium
test-browser:
	@test -x $(CHROMIUM) && test -x /usr/bin/chromedriver || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "chromium is not installed: the browser test will be skipped"

# The PACS tests run a real Orthanc with its DICOMweb plugin (Debian's packages); the PostgreSQL tests a real
# postgres (Debian's postgresql). Installed when we can (root with apt), else those tests skip with the reason.
# policy-rc.d keeps apt from starting the system-wide Orthanc: the tests start their own on a free port.
ORTHANC ?= /usr/sbin/Orthanc
test-servers:
	@test -x $(ORTHANC) && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { [ -e /usr/sbin/policy-rc.d ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; } \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb postgresql >/dev/null; } \
		|| echo "orthanc or postgresql is not installed: the PACS or PostgreSQL tests will be skipped"

test: $(STAMP) test-browser test-servers
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; OMP_NUM_THREADS=1 $(BIN)/python $$b || exit 1; done

# The inference service on 127.0.0.1:8000 over the champions of the embedded MLflow store. Demo mode accepts the
# documented demo keys for the built-in cohort only; real deployments set SHIPA_SERVICE_TOKEN_PEPPER, SHIPA_SERVICE_AUDIT_KEY and
# SHIPA_PSEUDONYM_KEY. Create a token first: .venv/bin/shipa tokens add --name me --role admin
serve: $(STAMP)
	SHIPA_SERVICE_DEMO_MODE=$${SHIPA_SERVICE_DEMO_MODE:-true} SHIPA_SERVICE_TRACKING_URI=$${SHIPA_SERVICE_TRACKING_URI:-$(MLFLOW_TRACKING_URI)} \
		OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/shipa serve

# The MLflow UI on 127.0.0.1 over the embedded store (override MLFLOW_PORT).
MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP)
	$(BIN)/python -m pipelines.tracking.server --root $(CURDIR) --port $(MLFLOW_PORT)

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton)' > constraints.txt

clean-data:
	rm -rf data/raw data/interim data/processed
