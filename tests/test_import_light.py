import subprocess
import sys

HEAVY = ("gradio", "jupyter", "jupyterlab", "cupy", "ipywidgets", "plotly", "torch", "transformers", "numba")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_workbench_is_light():
    mods = _loaded_after("import workbench")
    assert not {m for m in mods if m.split(".")[0] in HEAVY}, "import workbench pulled heavy libraries"


def test_paper_modules_do_not_import_ui_libraries():
    mods = _loaded_after("import workbench.data.shapes, workbench.train, workbench.checkpoints, workbench.bench")
    assert not {m for m in mods if m.split(".")[0] in ("gradio", "jupyter", "jupyterlab", "cupy", "ipywidgets")}


def test_lazy_attribute_access():
    import workbench

    assert workbench.data.shapes.CLASSES[0] == "circle"
    try:
        workbench.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
