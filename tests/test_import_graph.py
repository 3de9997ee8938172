"""The direction of dependence inside the ``workbench`` package, read from the source with ``ast``.

* no import cycle among the modules' top-level imports (what runs when a module is imported);
* nothing outside ``workbench.apps`` / ``workbench.cli`` imports ``workbench.apps`` (function-local imports included);
* the paper modules (backbones and methods) never import the layers built on them: demos, studies, viz, widgets,
  apps (function-local imports included).

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
    is_package = path.name == "__init__.py"
    nodes = _top_level_statements(tree.body) if top_level_only else ast.walk(tree)
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
    out.discard(module)
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
