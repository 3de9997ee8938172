# Vision Workbench — the two commands of the README are `make app` and `make test`.
# Everything installs into .venv; torch is pinned to the CPU build (torch==2.13.0) so CUDA wheels are never pulled.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 7860
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=

export GRADIO_ANALYTICS_ENABLED = False
export HF_HUB_OFFLINE = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TRANSFORMERS_OFFLINE = 1
export PLOTLY_RENDERER = plotly_mimetype
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: app test install install-dev browser lint notebooks nb clean help

help:
	@echo "make app    install into $(VENV) and launch the app hub on http://$(HOST):$(PORT)"
	@echo "make test   install the dev extras (+ Debian chromium) and run every test"
	@echo "make notebooks   re-execute every notebook in place (commit the outputs)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the stamp files make repeated runs skip the installs; pyproject.toml changes trigger them again
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev browser

# Debian's chromium for the browser tests (Playwright drives it; no browser is ever downloaded)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

app: install
	$(BIN)/workbench app --host $(HOST) --port $(PORT)

# every test: unit tests, app function tests, browser tests, the nvcc compile check, and nbval over notebooks/
test: install-dev
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --nbval --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check workbench apps tests benchmarks

notebooks: install-dev
	for nb in notebooks/*.ipynb; do $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=False "$$nb" || exit 1; done

# one notebook: make nb NB=notebooks/00_tour.ipynb
nb: install-dev
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=False "$(NB)"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
