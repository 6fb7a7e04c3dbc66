# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test bench install clean
CHROMIUM := /usr/bin/chromium

run: $(STAMP)
	$(PY) -m bot.launch

test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# The browser tests drive Debian's chromium through Playwright (never a downloaded browser build).
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	apt-get install -y -q chromium >/dev/null || sudo apt-get install -y -q chromium

clean:
	rm -rf $(VENV) var
