"""The direction of dependence inside the ``workbench`` package, read from the source with ``ast``.

* no import cycle among the modules' top-level imports (what runs when a module is imported);
* nothing outside ``workbench.apps`` / ``workbench.cli`` imports ``workbench.apps`` (function-local imports included);
* the paper modules (backbones and methods) never import the layers built on them: demos, studies, viz, widgets,
  apps (function-local imports included);
* a function-local import of the package's own modules keeps a heavy third-party package (torch, gradio, plotly
  ...) out of the importing module: one that would load nothing heavy the module does not load already belongs
  with the module-level imports (issue 17.3). "Heavy" is read from the source: a module is heavy in a package when
  its top-level imports, or those of a package module it imports at top level (transitively), name it.

The checker itself is tested on a small synthetic package, so a bug in it cannot make the real checks vacuous.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "workbench"
PAPER_MODULES = ("swin_v2", "vit", "simmim", "moby", "cbn", "dnl", "icar", "models", "layers")
UPPER_LAYERS = ("demos", "studies", "viz", "widgets", "apps")


# ------------------------------------------------------------------------------------------------ the checker
def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under ``root`` (a package called ``package``)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_statements(body):
    """Statements executed when the module is imported: the module body, descending into ``if`` / ``try`` /
    ``with`` blocks but not into functions or classes (``if TYPE_CHECKING:`` blocks are skipped)."""
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_statements(node.body)
            yield from _top_level_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _top_level_statements(block)
        elif isinstance(node, ast.With):
            yield from _top_level_statements(node.body)
        else:
            yield node


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, known: set[str], top_level_only: bool) -> set[str]:
    """Modules of ``known`` that ``module`` imports (``import a.b``, ``from a import b`` where ``a.b`` may be a
    module, relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = _top_level_statements(tree.body) if top_level_only else ast.walk(tree)
    out = _targets(module, path.name == "__init__.py", nodes, known)
    out.discard(module)
    return out


def _targets(module: str, is_package: bool, nodes, known: set[str]) -> set[str]:
    """Modules of ``known`` named by the import statements among ``nodes``."""
    out: set[str] = set()

    def add(name: str) -> None:
        # the most specific known module named by ``name`` (``a.b.func`` -> ``a.b``)
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.add(".".join(parts))

    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, is_package, node)
            add(src)
            for alias in node.names:
                if alias.name != "*":
                    add(f"{src}.{alias.name}")
    return out


def import_graph(root: Path, package: str, top_level_only: bool = True) -> dict[str, set[str]]:
    files = module_files(root, package)
    known = set(files)
    return {m: imported_modules(m, f, known, top_level_only) for m, f in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


HEAVY = frozenset({"torch", "torchvision", "gradio", "gradio_client", "ipywidgets", "IPython", "plotly", "numba",
                   "cupy", "cupyx", "transformers", "scipy", "sklearn", "skimage", "PIL", "matplotlib", "nbformat",
                   "kaleido"})


def _is_heavy(name: str) -> bool:
    top = name.split(".")[0]
    return top in HEAVY or top.startswith("jupyter")


def _with_parents(modules: set[str], known: set[str]) -> set[str]:
    """``modules`` and the packages above them (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    out = set()
    for m in modules:
        parts = m.split(".")
        out |= {p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in known}
    return out


def heavy_packages(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: heavy third-party packages importing it loads}``, from the top-level imports of the module, of the
    packages above it and of every package module it imports at top level, transitively (what those packages import
    in turn is not followed: gradio's PIL does not change a verdict)."""
    files = module_files(root, package)
    known = set(files)
    graph, heavy = {}, {}
    for m, f in files.items():
        body = ast.parse(f.read_text(), filename=str(f)).body
        graph[m] = _with_parents(imported_modules(m, f, known, top_level_only=True) | {m}, known) - {m}
        heavy[m] = {a.name.split(".")[0] for n in _top_level_statements(body) if isinstance(n, ast.Import)
                    for a in n.names if _is_heavy(a.name)}
        heavy[m] |= {n.module.split(".")[0] for n in _top_level_statements(body)
                     if isinstance(n, ast.ImportFrom) and not n.level and n.module and _is_heavy(n.module)}
    changed = True
    while changed:  # a fixed point, so an import cycle cannot hide a heavy import
        changed = False
        for m in graph:
            new = set().union(heavy[m], *(heavy[t] for t in graph[m]))
            if new != heavy[m]:
                heavy[m], changed = new, True
    return heavy


def hoistable_local_imports(root: Path, package: str) -> list[tuple[str, int, str]]:
    """``(module, line, statement)`` of every function-local import of the package's own modules that would load no
    heavy package the importing module does not load already (so it could sit with the module-level imports)."""
    files = module_files(root, package)
    known = set(files)
    heavy = heavy_packages(root, package)
    out = []
    for m, f in files.items():
        text = f.read_text()
        tree = ast.parse(text, filename=str(f))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):  # nested functions are walked twice: the set below removes repeats
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                targets = _with_parents(_targets(m, f.name == "__init__.py", [node], known), known)
                if targets and not set().union(*(heavy[t] for t in targets)) - heavy[m]:
                    out.append((m, node.lineno, ast.get_source_segment(text, node).split("\n")[0]))
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------ the checker, checked
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_cycles_through_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "a.py": "from . import b\n",                       # a -> b
        "b.py": "from .sub.c import thing\n",               # b -> sub.c
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\nthing = 1\n",       # sub.c -> a  (cycle a -> b -> sub.c -> a)
        "d.py": "def f():\n    from pkg import a\n",        # a local import: not part of the import-time graph
        "e.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import e2\n",
        "e2.py": "from pkg import e\n",
        "f.py": "try:\n    import pkg.g as g\nexcept ImportError:\n    g = None\n",
        "g.py": "from pkg.f import g\n",                    # f <-> g through a try block
    })
    g = import_graph(pkg, "pkg")
    # ``from . import b`` reads package ``pkg`` (its __init__ runs) and submodule ``pkg.b``
    assert g["pkg.a"] == {"pkg", "pkg.b"} and g["pkg.b"] == {"pkg.sub.c"} and g["pkg.sub.c"] == {"pkg", "pkg.a"}
    assert g["pkg.d"] == set() and g["pkg.e"] == set()
    assert import_graph(pkg, "pkg", top_level_only=False)["pkg.d"] == {"pkg", "pkg.a"}
    assert sorted(cycles(g)) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.f", "pkg.g"]]


def test_checker_sees_no_cycle_in_a_chain(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {"__init__.py": "", "a.py": "import pkg.b\n", "b.py": "from pkg import c\n", "c.py": "import os\n"})
    g = import_graph(pkg, "pkg")
    assert g["pkg.a"] == {"pkg.b"} and g["pkg.b"] == {"pkg", "pkg.c"} and cycles(g) == []


def test_checker_reads_heavy_packages_and_hoistable_local_imports(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "light.py": "import os\nimport numpy as np\n",
        "heavy.py": "from __future__ import annotations\nimport torch.nn as nn\n",
        "mid.py": "from pkg import heavy\n",                                     # torch, through heavy
        "plot.py": "try:\n    from plotly import graph_objects\nexcept ImportError:\n    pass\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gradio\n",
        "sub/__init__.py": "import ipywidgets\n",                                  # a heavy package __init__
        "sub/leaf.py": "X = 1\n",
        "user.py": (
            "import torch\n"
            "def a():\n    from pkg import light\n"                             # hoistable: light
            "def b():\n    from pkg.mid import heavy\n"                         # hoistable: torch already here
            "def c():\n    from . import plot\n"                                # local: plotly
            "def d():\n    def inner():\n        import pkg.typed\n"           # hoistable (nested function)
            "def e():\n    from pkg.sub import leaf\n"                          # local: ipywidgets via sub
            "def f():\n    import json\n"                                       # not the package's own
        ),
    })
    heavy = heavy_packages(pkg, "pkg")
    assert heavy["pkg.light"] == set() and heavy["pkg.heavy"] == {"torch"} and heavy["pkg.mid"] == {"torch"}
    assert heavy["pkg.plot"] == {"plotly"} and heavy["pkg.typed"] == set() and heavy["pkg.sub.leaf"] == {"ipywidgets"}
    assert [(line, stmt) for _, line, stmt in hoistable_local_imports(pkg, "pkg")] == [
        (3, "from pkg import light"), (5, "from pkg.mid import heavy"), (10, "import pkg.typed")]


# ------------------------------------------------------------------------------------------------ the real package
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, "workbench")


@pytest.fixture(scope="module")
def graph_all_imports():
    return import_graph(ROOT, "workbench", top_level_only=False)


def test_graph_reads_the_package(graph):
    """Sanity: the graph holds the modules and edges we know exist (so the checks below are not vacuous)."""
    assert {"workbench.models", "workbench.swin_v2", "workbench.demos.swin_v2", "workbench.apps.hub",
            "workbench.studies.protocol"} <= set(graph)
    assert {"workbench.swin_v2", "workbench.vit"} <= graph["workbench.models"]
    assert "workbench.apps.common" in graph["workbench.apps.hub"]
    assert "workbench.demos.common" in graph["workbench.demos.swin_v2"]


def test_no_import_cycle_in_the_package(graph):
    found = cycles(graph)
    assert not found, "import cycles (top-level imports):\n" + "\n".join(" -> ".join(c) for c in found)


def test_only_apps_and_cli_import_the_apps(graph_all_imports):
    bad = {m: sorted(t for t in targets if _in(t, "workbench.apps"))
           for m, targets in graph_all_imports.items()
           if not (_in(m, "workbench.apps") or m == "workbench.cli")}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"modules outside workbench.apps / workbench.cli import the apps: {bad}"


@pytest.mark.parametrize("paper", PAPER_MODULES)
def test_paper_modules_do_not_import_demos_studies_viz_widgets_or_apps(graph_all_imports, paper):
    module = f"workbench.{paper}"
    assert module in graph_all_imports, f"{module} not found"
    bad = sorted(t for t in graph_all_imports[module] if any(_in(t, f"workbench.{u}") for u in UPPER_LAYERS))
    assert not bad, f"{module} imports {bad} (the paper modules sit below demos/studies/viz/widgets/apps)"


# a local import of a light module kept for another reason than a heavy package: {(module, statement): why}
KEEP_LOCAL = {
    ("workbench.cli", "from .apps import hub"): "workbench.apps.common sets the offline / no-telemetry environment "
                                                "at import: only `workbench app` should",
}


def test_local_imports_only_keep_heavy_packages_out():
    """Issue 17.3: a function-local import of the package's own modules must keep a heavy package out of the
    importing module; the others sit with the module-level imports, where the cycle check above sees them."""
    found = [(m, line, stmt) for m, line, stmt in hoistable_local_imports(ROOT, "workbench")
             if (m, stmt) not in KEEP_LOCAL]
    assert not found, ("function-local imports that load no heavy package the module does not load already "
                       "(move them to the module-level imports):\n"
                       + "\n".join(f"{m}:{line}: {stmt}" for m, line, stmt in found))
