"""The package's import graph (issue 17.3; drawn in docs/architecture.md): no cycles, and imports go one way.

Every ``import`` statement of every module is read from the source — function-local ones included, since they
run as soon as the function does — and resolved to the package's own modules. A module may import modules of
its own layer or of lower ones:

    0 foundation  data/, records, inspect, checkpoints, bench (timing and result files), helptext (CLI help)
    1 backbones   layers, swin_v2, vit, models (the registry)
    2 methods     simmim, moby, cbn, dnl, icar, sparse/, train
    3 viz         viz/ (draws; the demos call it)
    4 beside      demos/, studies/, benchmarks/, report
    5 front ends  widgets/, apps/
    6 cli
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

LAYERS = {
    0: ("workbench", "workbench.data", "workbench.records", "workbench.inspect", "workbench.checkpoints",
        "workbench.bench", "workbench.helptext"),
    1: ("workbench.layers", "workbench.swin_v2", "workbench.vit", "workbench.resnet", "workbench.models"),
    2: ("workbench.simmim", "workbench.moby", "workbench.cbn", "workbench.dnl", "workbench.icar", "workbench.sparse",
        "workbench.train"),
    3: ("workbench.viz",),
    4: ("workbench.demos", "workbench.studies", "workbench.benchmarks", "workbench.report"),
    5: ("workbench.widgets", "workbench.apps"),
    6: ("workbench.cli",),
}


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (a ``from package import module`` counts as the module)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            targets = subs if len(subs) == len(node.names) else [module] + subs
        else:
            continue
        for t in targets:
            while t and t not in known:  # "workbench.viz.simmim.something" -> the module that holds it
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def rank(module: str) -> int | None:
    best = None
    for r, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (r, p)
    return best[0] if best else None


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_local_relative_and_from_imports():
    g = graph()
    assert "workbench.apps.hub" in g["workbench.cli"]           # inside cmd_app
    assert "workbench.records" in g["workbench.cli"]            # from .records import ...
    assert "workbench.swin_v2" in g["workbench.models"]         # from workbench import swin_v2
    assert "workbench.viz.simmim" in g["workbench.demos.simmim"]  # from workbench.viz import simmim as vz
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_layer():
    assert [m for m in graph() if rank(m) is None] == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_imports_go_down_the_layers():
    up = sorted((m, t) for m, ts in graph().items() for t in ts if rank(t) > rank(m))
    assert up == [], "imports from a higher layer:\n" + "\n".join(f"{m} -> {t}" for m, t in up)


def test_only_the_cli_and_the_apps_import_the_apps():
    users = {m for m, ts in graph().items() for t in ts if t.startswith("workbench.apps")}
    assert {m for m in users if not (m == "workbench.cli" or m.startswith("workbench.apps."))} == set()
