# Two commands for a fresh machine: `make run` and `make test`.
# Mesa 3.5 needs Python >= 3.12; .python-version makes pyenv resolve python3.12.
PY ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-long lint ui clean venv browser-deps

venv: $(STAMP)

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.12 (Mesa 3.5 needs it) or run make PY=/path/to/python3.12"; exit 1; }
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml tools/offline_assets.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python tools/offline_assets.py
	@touch $(STAMP)

# Debian's chromium for the browser tests (no browser downloads work here); root installs it.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: /usr/bin/chromium missing and cannot be installed; browser tests will skip"; fi; \
	fi

run: $(STAMP)
	$(BIN)/spiral run scenarios/baseline.toml

# pytest exit code 5 ("no tests collected") is turned into a failure: a suite that ran nothing
# must never pass silently.
test: $(STAMP) browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

# The trainer UI's 10-minute play test in a real browser (issue 15), on top of make test.
test-long: $(STAMP) browser-deps
	SPIRAL_LONG_PLAY=1 $(BIN)/python -m pytest tests/test_browser.py -k ten_minutes $(PYTEST_ARGS)

ui: $(STAMP)
	$(BIN)/spiral ui

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
