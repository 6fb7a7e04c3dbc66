# The two commands of the README: `make run` and `make test` (and `make check`, `make bench`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
RUN_STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.requirements-dev-installed
# Debian packages the tests and benchmarks need: chromium for the browser tests (driven by
# Playwright, never a downloaded browser build), wrk for the webhook benchmark, faketime for the
# soak's simulated days (bench/soak.py).
TEST_SYSTEM_PACKAGES := chromium wrk faketime

.PHONY: run test check bench soak install install-dev system-packages clean

run: $(RUN_STAMP)
	@$(PY) -m bot.launch

# Two pytest processes (pytest-xdist): most tests wait on the processes they start, so two
# share this 2-core machine well; each has its own redis-server and simulator, and an idle one
# takes tests from the other's queue (worksteal). `pytest tests/x.py` alone runs serially.
test: $(DEV_STAMP) system-packages
	$(PY) -m pytest -n 2 --dist worksteal

# Lint and format (ruff), types (mypy: strict for storage/ and the domain), and which way imports
# run (tests/test_layers.py, also part of `make test`). Settings in pyproject.toml.
check: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q tests/test_layers.py

bench: $(DEV_STAMP) system-packages
	$(PY) -m bench

# 30 simulated days of traffic: Redis memory stops growing (about three minutes; not in `bench`).
soak: $(DEV_STAMP) system-packages
	$(PY) -m bench.soak

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

system-packages:
	@tools/system-packages $(TEST_SYSTEM_PACKAGES)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt | $(VENV)/bin/python
	$(PIP) -r requirements.txt
	touch $@

$(DEV_STAMP): requirements-dev.txt requirements.txt | $(VENV)/bin/python
	$(PIP) -r requirements-dev.txt
	touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) var
