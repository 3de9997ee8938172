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

.PHONY: app test install install-dev browser lint notebooks nb sync clean help

help:
	@echo "make app    install into $(VENV) and serve the app hub on http://$(HOST):$(PORT) (Ctrl-C stops it)"
	@echo "make test   install the dev extras (+ Debian chromium) and run every test"
	@echo "make notebooks   sync the jupytext sources and re-execute every notebook (commit the outputs)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the stamp files make repeated runs skip the installs; pyproject.toml changes trigger them again.
# pip byte-compiles what it installs on one core (~40 s of an ~85 s install); compileall does it on every core
# (~26 s on 2). The .pyc files must exist: with PYTHONDONTWRITEBYTECODE=1 (set on some machines) nothing would cache
# them and every process would compile its imports again. A file that does not compile (a package's Python 2 test
# data) is skipped, as pip skips it.
PIP_INSTALL = $(BIN)/pip install -q --no-compile
COMPILE = $(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e .
	$(COMPILE)
	@touch $@

# plain `jupyter nbconvert` in the environment stores no widget state: an editable install skips the data-files that
# a wheel install (pip install .) puts into etc/jupyter, so the config is copied there
JUPYTER_CONFIG = $(VENV)/etc/jupyter/jupyter_nbconvert_config.json
$(JUPYTER_CONFIG): jupyter-config/jupyter_nbconvert_config.json | $(BIN)/python
	@mkdir -p $(dir $@) && cp $< $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e ".[dev]"
	$(COMPILE)
	@touch $@

install: $(VENV)/.installed $(JUPYTER_CONFIG)
install-dev: $(VENV)/.installed-dev $(JUPYTER_CONFIG) browser

# Debian's chromium for the browser tests (Playwright drives it; no browser is ever downloaded)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

app: install
	$(BIN)/workbench app --host $(HOST) --port $(PORT)

# every test: unit tests, app function tests, browser tests, the nvcc compile check, and nbval over notebooks/.
# The notebooks run under PyTorch's plain kernels (ATEN_CPU_CAPABILITY=default) while their committed outputs come
# from a vectorised CPU: a passing run proves the outputs do not depend on the CPU.
test: install-dev
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder --nbval \
	  --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check workbench tests

# notebooks/*.py (jupytext, percent format) are the sources; the .ipynb files carry the executed outputs.
# Figures get a static PNG next to the plotly JSON (kaleido through an offline chromium), so GitHub, nbviewer and
# `nbconvert --to html` show them; nbval never compares the PNGs.
NB_ENV = PLOTLY_RENDERER=plotly_mimetype+png BROWSER_PATH=$(CURDIR)/tools/chromium-offline OMP_NUM_THREADS=1

sync: install-dev
	$(BIN)/jupytext --sync notebooks/*.py

notebooks: install-dev browser sync
	for nb in notebooks/*.ipynb; do $(NB_ENV) $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; done

# one notebook: make nb NB=notebooks/00_tour.ipynb
nb: install-dev browser
	$(BIN)/jupytext --sync "$(NB:.ipynb=.py)"
	$(NB_ENV) $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$(NB)"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
