# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test check lint typecheck bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/canary demo

# Starts a throwaway PostgreSQL and installs Prometheus, Alertmanager and nginx (from Debian's
# packages, if missing) for the tests.
test: $(STAMP)
	bash tests/infra/monitoring.sh
	bash tests/infra/nginx.sh
	bash tests/infra/chromium.sh
	CANARY_TEST_PG_URL=$$(bash tests/infra/postgres.sh) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)
	for b in importer opens resizer detection; do $(PY) -m benchmarks.$$b; done

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
