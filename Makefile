# Everything installs itself: `make demo` and `make test` work on a fresh Debian 12 as root.
VDC_CACHE_DIR ?= /var/cache/vdc
export VDC_CACHE_DIR
VENV := $(VDC_CACHE_DIR)/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps deps-e2e demo test test-cold test-fast lint bench clean-leftovers

# What the demo and the host tests need: Debian packages, the virtualenv, the test guest.
deps:
	@python3 scripts/deps.py

# Also what the e2e and deploy tests need: the cluster's binaries, skaffold, images.
deps-e2e:
	@python3 scripts/deps.py --e2e

demo: deps
	@bash scripts/demo.sh

# Every test, root-only and slow ones included (CI is root), in random order (pytest-randomly:
# PYTEST_ARGS="-p randomly --randomly-seed=N" repeats an order, "-p no:randomly" turns it off).
test: deps-e2e lint
	$(PY) -m pytest $(PYTEST_ARGS)

# What a new machine does: a fresh clone of HEAD with no ../shared beside it and an empty
# cache directory, then `make test`.
test-cold:
	@bash scripts/test-cold.sh

# Pure tests only: no root, no kernel objects.
test-fast: deps
	$(PY) -m pytest -m "not root and not slow" $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check runtime operator tests bench scripts
	$(VENV)/bin/ruff format --check runtime operator tests bench scripts
	$(VENV)/bin/lint-imports --no-cache --no-logo

bench: deps-e2e
	PYTHONPATH=$(CURDIR) $(PY) bench/fabric_build.py
	PYTHONPATH=$(CURDIR) $(PY) bench/boot.py
	PYTHONPATH=$(CURDIR) $(PY) bench/bmc.py
	PYTHONPATH=$(CURDIR) $(PY) bench/stretch.py
	PYTHONPATH=$(CURDIR) $(PY) bench/operator.py
	PYTHONPATH=$(CURDIR) $(PY) bench/groups.py
