"""The committed notebooks are executed, light and follow the house pattern (nbval checks their outputs)."""
import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
PAPERS = ["01_swin_v2", "02_simmim", "03_moby", "04_cbn", "05_dnl", "06_icar", "07_balanced_sparsity"]


def test_tour_and_every_paper_notebook_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert "00_tour" in names
    assert set(PAPERS) <= names, f"missing: {sorted(set(PAPERS) - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_executed_light_and_ends_with_explore(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "execute it and commit the outputs"
    assert any(c.get("outputs") for c in code)
    assert "widgets" not in nb.get("metadata", {}), "widget state stored: run nbconvert with store_widget_state=False"
    assert path.stat().st_size < 3 * 2**20, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "a committed cell output is an error"
    headings = [line for c in nb["cells"] if c["cell_type"] == "markdown"
                for line in "".join(c["source"]).splitlines() if line.startswith("#")]
    assert any("Explore" in h for h in headings), "every notebook ends with an Explore section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_its_jupytext_source_are_in_sync(path):
    """``notebooks/<name>.py`` (percent format) is the source: every cell of the executed ``.ipynb`` has the same
    type and text (``make sync`` / ``jupytext --sync`` brings them back together)."""
    import jupytext

    src = path.with_suffix(".py")
    assert src.exists(), f"{src.name} is missing: pair it with `jupytext --set-formats ipynb,py:percent {path.name}`"
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(jupytext.read(src)) == cells(jupytext.read(path))
