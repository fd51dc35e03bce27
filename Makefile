# Everything installs itself: `make demo` and `make test` work on a fresh Debian 12 as root.
VDC_CACHE_DIR ?= /var/cache/vdc
export VDC_CACHE_DIR
VENV := $(VDC_CACHE_DIR)/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps demo test test-fast lint bench clean-leftovers

deps:
	@bash scripts/install-deps.sh

demo: deps
	@bash scripts/demo.sh

# Every test, root-only and slow ones included (CI is root).
test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Pure tests only: no root, no kernel objects.
test-fast: deps
	$(PY) -m pytest -m "not root and not slow" $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check runtime operator tests bench
	$(VENV)/bin/ruff format --check runtime operator tests bench

bench: deps
	PYTHONPATH=$(CURDIR) $(PY) bench/fabric_build.py
	PYTHONPATH=$(CURDIR) $(PY) bench/boot.py
	PYTHONPATH=$(CURDIR) $(PY) bench/bmc.py
	PYTHONPATH=$(CURDIR) $(PY) bench/operator.py
