# Two commands on a fresh machine:
#   make run    set everything up (virtual environment, torch 2.13.0 CPU, the package) and apply experiments/
#   make test   lint, type-check and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
HIML := $(VENV)/bin/himl
# torch is pinned to the CPU build that lies on this machine's disk; an unpinned torch would
# pull a multi-GB CUDA build. It is installed first, then the package with its train extra
# (torch and Lightning: the base install has neither), the azure extra and the dev tools.
TORCH ?= torch==2.13.0

.PHONY: setup run test lint typecheck unit bench clean

# Azurite (Microsoft's Azure Storage emulator, npm package pinned in tests/azurite/) serves the
# blob storage of the Azure ML tests; the stamp inside node_modules makes setup re-runnable
# without reinstalling (npm ci empties node_modules first, so a stale stamp cannot survive).
AZURITE_STAMP := tests/azurite/node_modules/.installed

setup: $(VENV)/.installed $(AZURITE_STAMP)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,azure,train,report,ui]' "$(TORCH)"
	touch $@

$(AZURITE_STAMP): tests/azurite/package.json tests/azurite/package-lock.json
	@command -v npm >/dev/null || { echo "make setup: the Azure ML tests need Azurite, which needs node 20 and npm"; exit 1; }
	npm ci --prefix tests/azurite --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	$(HIML) validate experiments/
	$(HIML) apply experiments/ --yes

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The branch coverage of backends/azureml/ ([tool.coverage] in pyproject.toml) is held at 95%,
# measured by the tests that drive the Azure ML backend (COV_TESTS); the rest of the suite runs
# without the coverage tracer, which slows in-process training by half. A subset of the tests:
# make unit PYTEST_ARGS="tests/..." (runs it once, without coverage)
COV_TESTS := tests/backends tests/apply/test_execute_batches.py \
	tests/apply/test_apply_routing.py tests/runner/test_azureml_job_side.py
unit: setup
ifeq ($(PYTEST_ARGS),)
	$(PY) -m pytest -n 2 --no-cov $(addprefix --ignore=,$(COV_TESTS))
	$(PY) -m pytest -n 2 --cov=himl_manifest.backends.azureml $(COV_TESTS)
else
	$(PY) -m pytest -n 2 --no-cov $(PYTEST_ARGS)
endif

test: lint typecheck unit

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) outputs mlflow.db .himl mlartifacts
