"""The notebooks follow the house rules that nbval alone cannot see.

* Every ``notebooks/NN_name.py`` (jupytext, percent format) has its ``.ipynb`` twin with the same cells.
* The sources follow the pattern: one thread and fixed seeds first; each paper notebook shows its committed claims
  (``report.claims_markdown``) in a compared cell, reads study files only through ``report``, uses its demos layer,
  and ends with an *Explore* section whose last cell builds the explorer widget.
* What nbval ignores is only what may vary between CPUs: ``nbval-ignore-output`` cells print nothing and show one
  figure or widget; numbers are printed in compared cells, which every notebook has.
* The committed ``.ipynb`` files are executed (``make nb``): no errors, no stderr, no stored widget state, every
  plotly figure with its static PNG, under 3 MB.
"""
import json
import re
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PAPERS = {"01_swin_v2": "swin_v2", "02_simmim": "simmim", "03_moby": "moby", "04_cbn": "cbn", "05_dnl": "dnl",
          "06_icar": "icar", "07_balanced_sparsity": "sparse"}
NAMES = ["00_tour", *PAPERS]
IGNORE = "nbval-ignore-output"
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
FIGURE_KEYS = {PLOTLY, WIDGET, "image/png", "text/plain", "text/html"}
MAX_BYTES = 3 * 2**20


def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def _code(cells) -> list:
    return [c for c in cells if c["cell_type"] == "code"]


def _py_cells(name: str) -> list[dict]:
    jupytext = pytest.importorskip("jupytext")
    return [dict(c) for c in jupytext.read(NB_DIR / f"{name}.py")["cells"]]


def _ipynb(name: str) -> dict:
    return json.loads((NB_DIR / f"{name}.ipynb").read_text())


def _strip(src: str) -> str:
    """Code without comments and string literals (for the static checks)."""
    src = re.sub(r"(?s)(\"\"\"|''').*?\1", "", src)
    src = re.sub(r"\"(\\.|[^\"\\\n])*\"|'(\\.|[^'\\\n])*'", "''", src)
    return re.sub(r"#[^\n]*", "", src)


def test_tour_and_every_paper_notebook_exist_as_pairs():
    for name in NAMES:
        assert (NB_DIR / f"{name}.py").exists(), f"missing notebooks/{name}.py (the jupytext source)"
        assert (NB_DIR / f"{name}.ipynb").exists(), f"missing notebooks/{name}.ipynb (run `make nb NB=...`)"
    extra = {p.stem for p in NB_DIR.glob("*.ipynb")} - set(NAMES)
    assert not extra, f"notebooks without a place in the tour / paper list: {sorted(extra)}"


# ------------------------------------------------------------------------------------------------ sources
@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync(name):
    """The .ipynb holds exactly the cells of the .py (run `jupytext --sync notebooks/<name>.py`)."""
    nb = _ipynb(name)
    formats = nb.get("metadata", {}).get("jupytext", {}).get("formats", "")
    assert "py:percent" in formats, f"{name}.ipynb is not paired with a percent-format .py ({formats!r})"
    py = [(c["cell_type"], _source(c).strip(), sorted(_tags(c))) for c in _py_cells(name)]
    ipynb = [(c["cell_type"], _source(c).strip(), sorted(_tags(c))) for c in nb["cells"]]
    assert len(py) == len(ipynb), f"{name}: {len(py)} cells in the .py, {len(ipynb)} in the .ipynb"
    for i, (a, b) in enumerate(zip(py, ipynb)):
        assert a == b, f"{name}: cell {i} differs between the .py and the .ipynb; run jupytext --sync"


@pytest.mark.parametrize("name", NAMES)
def test_source_follows_the_house_pattern(name):
    cells = _py_cells(name)
    code = _code(cells)
    first = _strip(_source(code[0]))
    assert "torch.set_num_threads(1)" in first and "torch.manual_seed(" in first, \
        f"{name}: the first code cell sets one thread and the seed"
    last = code[-1]
    assert IGNORE in _tags(last) and re.search(r"\b\w*explorer\(", _strip(_source(last))), \
        f"{name}: the last code cell builds the explorer widget (tagged {IGNORE})"
    assert cells.index(last) > 0, name
    headings = [ln for c in cells if c["cell_type"] == "markdown" for ln in _source(c).splitlines()
                if ln.startswith("#")]
    assert headings and "Explore" in headings[-1], f"{name}: the last section is '## Explore'"
    for c in code:
        src = _strip(_source(c))
        assert "studies_dir(" not in src, f"{name}: read study files through report.packaged_studies()"
        if IGNORE in _tags(c):
            shown = [w for w in ("print(", "display(", "Markdown(") if w in src]
            assert not shown, (f"{name}: an {IGNORE} cell must not print ({shown}): numbers belong in compared "
                               f"cells, ignored cells show one figure or widget\n{_source(c)}")


@pytest.mark.parametrize("name", list(PAPERS))
def test_paper_notebook_shows_claims_and_uses_its_demo(name):
    paper = PAPERS[name]
    cells = _py_cells(name)
    compared = [_strip(_source(c)) for c in _code(cells) if IGNORE not in _tags(c)]
    everything = "\n".join(_source(c) for c in _code(cells))
    assert any("claims_markdown(" in s for s in compared), f"{name}: display report.claims_markdown(paper)"
    assert any("claim_figure(" in s for s in compared), f"{name}: draw a claim with report.claim_figure"
    assert f'PAPER = "{paper}"' in everything, f"{name}: PAPER names the study folder {paper!r}"
    assert f"workbench.demos import {paper}" in everything, f"{name}: use the demos layer workbench.demos.{paper}"
    assert f"workbench.widgets.{paper} import" in everything or f"workbench.widgets import {paper}" in everything, \
        f"{name}: the explorer comes from workbench.widgets.{paper}"
    maths = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    assert "$$" in maths, f"{name}: the paper's equations (LaTeX) are part of the notebook"


# ------------------------------------------------------------------------------------------------ executed copies
@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_executed_and_light(name):
    path = NB_DIR / f"{name}.ipynb"
    nb = _ipynb(name)
    code = _code(nb["cells"])
    assert all(c.get("execution_count") for c in code), f"{name}: execute it (make nb NB={path.relative_to(NB_DIR.parent)})"
    assert "widgets" not in nb.get("metadata", {}), "widget state stored: run nbconvert with store_widget_state=False"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB (limit 3 MB)"
    for i, c in enumerate(code):
        for o in c.get("outputs", []):
            assert o["output_type"] != "error", f"{name}: code cell {i} stored an error: {o.get('ename')}"
            assert not (o["output_type"] == "stream" and o.get("name") == "stderr"), \
                f"{name}: code cell {i} wrote to stderr (warnings differ between machines):\n{''.join(o['text'])[:500]}"


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_has_a_png_copy(name):
    """`make nb` renders with plotly_mimetype+png, so GitHub and nbconvert --to html show the figures."""
    for i, c in enumerate(_code(_ipynb(name)["cells"])):
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if PLOTLY in data:
                assert "image/png" in data, f"{name}: code cell {i} has a figure without its PNG; run `make nb`"


@pytest.mark.parametrize("name", NAMES)
def test_ignored_cells_hold_only_figures_and_compared_cells_carry_numbers(name):
    code = _code(_ipynb(name)["cells"])
    compared_outputs = 0
    for i, c in enumerate(code):
        outs = c.get("outputs", [])
        if IGNORE in _tags(c):
            assert len(outs) <= 1, f"{name}: ignored cell {i} shows {len(outs)} outputs; one figure per cell"
            for o in outs:
                assert o["output_type"] in ("display_data", "execute_result"), \
                    f"{name}: ignored cell {i} has a {o['output_type']} output; print numbers in a compared cell"
                keys = set(o.get("data", {}))
                assert keys & {PLOTLY, WIDGET} and keys <= FIGURE_KEYS, \
                    f"{name}: ignored cell {i} shows {sorted(keys)}, not one figure or widget"
        elif outs:
            compared_outputs += 1
    need = 3 if name == "00_tour" else 5
    assert compared_outputs >= need, f"{name}: only {compared_outputs} compared cells with outputs"


# ------------------------------------------------------------------------------------------------ how they are run
def test_make_test_runs_nbval_under_the_plain_cpu_kernels():
    """`make test` (what .ci/run calls) runs nbval over notebooks/ under PyTorch's plain kernels
    (ATEN_CPU_CAPABILITY=default) and compares outputs (no --nbval-lax): the committed outputs come from a vectorised
    CPU, so a green run proves they do not depend on the CPU."""
    root = NB_DIR.parent
    lines = (root / "Makefile").read_text().splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("test:")))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t") and not (recipe and recipe[-1].endswith("\\")):
            break
        recipe.append(ln)
    command = " ".join(ln.strip().rstrip("\\") for ln in recipe)
    assert command.startswith("ATEN_CPU_CAPABILITY=default "), command
    words = command.split()
    assert "--nbval" in words and "notebooks" in words and "--nbval-lax" not in words, command
    assert "--nbval-sanitize-with tests/nbval_sanitize.cfg" in command, command
    assert "make test" in (root / ".ci" / "run").read_text()


def test_plain_nbconvert_stores_no_widget_state():
    """The jupyter config shipped with the package (jupyter-config/ -> <prefix>/etc/jupyter) makes a plain
    `jupyter nbconvert --execute` store no widget state, as `make nb` does."""
    pytest.importorskip("nbconvert")
    from nbconvert.nbconvertapp import NbConvertApp
    from nbconvert.preprocessors import ExecutePreprocessor

    shipped = json.loads((NB_DIR.parent / "jupyter-config" / "jupyter_nbconvert_config.json").read_text())
    assert shipped["ExecutePreprocessor"]["store_widget_state"] is False
    app = NbConvertApp()
    app.load_config_file()
    assert ExecutePreprocessor(config=app.config).store_widget_state is False, \
        "the shipped nbconvert config is not installed in <venv>/etc/jupyter (make install copies it there)"
