# Two commands for a fresh machine: `make run` (app on the sample data) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench sample chromium

# compileall: an editable install leaves qflow's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set every CLI call would compile them again (about 0.1 s of CPU); pip compiles every other package this way.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q qflow
	touch $(STAMP)

install: $(STAMP)

## Start the console headless on http://127.0.0.1:8501 with the bundled sample data (this machine only;
## `make run HOST=0.0.0.0` with QFLOW_API_TOKEN set to serve others).
HOST ?= 127.0.0.1
run: install
	$(BIN)/python -m qflow app --host $(HOST) --port 8501

## Install everything (Chromium for the browser test included) and run the full suite.
test: install chromium
	$(BIN)/python -m ruff check qflow tests bench app.py views ui
	$(BIN)/python -m pytest

## Debian's Chromium for the browser test (Playwright cannot download one here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

lint: install
	$(BIN)/python -m ruff check qflow tests bench app.py views ui

bench: install
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

sample: install
	$(BIN)/python -m qflow sample sample_data
