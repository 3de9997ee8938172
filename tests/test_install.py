"""The runtime does not need the source checkout (issue 17.6).

The package is built and installed non-editable (``pip install --no-deps --no-build-isolation --target``) from a copy
of ``pyproject.toml``, ``README.md``, ``jupyter-config/``, ``workbench/`` and the checkout's ``studies``/``benchmarks``
links (links copied as links, so a package file that lives outside the package would go missing), then ``workbench report``, ``workbench bench sparse`` and ``workbench app`` run from
an empty folder with only the installed copy on ``PYTHONPATH``.
"""
from __future__ import annotations

import csv
import html
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"


def _files(top: Path) -> dict[str, Path]:
    """Every file under ``top`` (links followed), by relative path; caches left out."""
    out = {}
    for d, dirs, names in os.walk(top, followlinks=True):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for n in names:
            if not n.endswith(".pyc"):
                p = Path(d) / n
                out[p.relative_to(top).as_posix()] = p
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, env, app)``: the installed package, an environment that sees only it, and a ``workbench app``
    process started at once (its first build takes a while; the other tests run meanwhile)."""
    base = tmp_path_factory.mktemp("install")
    src, site = base / "src", base / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "jupyter-config", src / "jupyter-config")
    shutil.copytree(PACKAGE, src / "workbench", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("studies", "benchmarks"):  # the checkout's links into the package: they must not become packages
        if (ROOT / name).is_symlink():
            shutil.copy2(ROOT / name, src / name, follow_symlinks=False)
        elif (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "-q", "--target", str(site), str(src)],
                         capture_output=True, text=True, cwd=base, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORKBENCH_ROOT", "WORKBENCH_RUNS")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    before = set(_files(site))
    port = _free_port()
    app_dir = tmp_path_factory.mktemp("app-cwd")
    log = open(base / "app.log", "w")  # closed below, after the server stops
    app = subprocess.Popen([sys.executable, "-m", "workbench.cli", "app", "--host", "127.0.0.1", "--port", str(port)],
                           cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"site": site, "env": env, "app": app, "port": port, "log": base / "app.log", "before": before}
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()


def _run(installed, tmp_path, *args, script: bool = False) -> subprocess.CompletedProcess:
    """Run an installed command in an empty folder (``tmp_path``)."""
    cmd = [sys.executable, str(installed["site"] / "bin" / "workbench")] if script else \
        [sys.executable, "-m", "workbench.cli"]
    out = subprocess.run(cmd + list(args), cwd=tmp_path, env=installed["env"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_the_installed_package_is_complete_and_alone(installed, tmp_path):
    site = installed["site"]
    code = ("import importlib.util, json, workbench; print(json.dumps({'file': workbench.__file__, "
            "'apps': importlib.util.find_spec('apps') is not None, "
            "'benchmarks': importlib.util.find_spec('benchmarks') is not None}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=installed["env"], capture_output=True,
                         text=True, check=True)
    seen = json.loads(out.stdout)
    assert Path(seen["file"]).resolve().is_relative_to(site.resolve())
    assert not seen["apps"] and not seen["benchmarks"]
    top = {p.name for p in site.iterdir()}
    assert "workbench" in top and not top & {"apps", "benchmarks", "studies", "tests", "notebooks"}
    record = next(site.glob("vision_workbench-*.dist-info")) / "RECORD"
    with open(record, newline="") as f:
        roots = {[x for x in Path(row[0]).parts if x != ".."][0] for row in csv.reader(f) if row}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"workbench", "bin", "etc"}, roots
    # every file of the source package is shipped, byte for byte: modules, the committed study records (once a
    # link out of the package), benchmark tables, demo checkpoints, kernels and the crossover table
    src, dst = _files(PACKAGE), _files(site / "workbench")
    assert set(src) <= set(dst), sorted(set(src) - set(dst))[:20]
    assert [k for k in src if src[k].read_bytes() != dst[k].read_bytes()] == []
    for must in ("assets/studies/cbn/diagnostic.json", "assets/benchmarks/sparse.json", "sparse/crossover.json",
                 "sparse/crossover_cuda.json", "assets/benchmarks/sparse_gpu.json",
                 "assets/checkpoints/swinv2_micro_shapes64.pt"):
        assert must in dst


def test_report_from_any_directory(installed, tmp_path):
    from workbench import report

    out = _run(installed, tmp_path, "report", "--out", "X.html")
    page = (tmp_path / "X.html").read_text()
    assert "wrote X.html" in out.stdout and page.startswith("<!DOCTYPE html>")
    committed = report.load_claims(PACKAGE / "assets" / "studies")
    for doc in committed.values():
        for c in doc["claims"]:
            assert html.escape(c["claim"]) in page and f'id="{html.escape(c["id"])}"' in page
    for title, _ in report.PAPERS.values():
        assert html.escape(title) in page
    # the installed copy reads exactly the claims committed in the checkout
    assert page == report.render(committed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.html"]


def test_bench_sparse_from_any_directory(installed, tmp_path):
    out = _run(installed, tmp_path, "bench", "sparse", "--device", "cpu", "--points", "256:0.9:1", "--threads", "1",
               "--rounds", "1", "--block", "1", "--settle", "0", script=True)
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| size | batch | sparsity |"))
    methods = [c.strip() for c in lines[head].strip("|").split("|")][3:]
    assert {"dense_torch", "dense_numpy", "csr_scipy", "balanced"} <= set(methods)
    row = [c.strip() for c in lines[head + 2].strip("|").split("|")]
    assert row[:3] == ["256", "1", "0.900"]
    ratios = dict(zip(methods, row[3:]))
    assert all(v.endswith("x") and float(v[:-1]) >= 0 for v in ratios.values())
    # the printed ratios are the written ones, and the fastest dense product is the reference (ratio 1)
    written = json.loads((tmp_path / "runs" / "benchmarks" / "sparse_goal_1thread.json").read_text())["rows"]
    for r in written:
        assert ratios[r["method"]] == f"{r['speedup_vs_dense']:.2f}x"
    assert max(r["speedup_vs_dense"] for r in written if r["method"].startswith("dense")) == 1.0


def test_app_answers_on_loopback(installed):
    app, url = installed["app"], f"http://127.0.0.1:{installed['port']}/"
    status, deadline = None, time.monotonic() + 540  # a generous bound for a loaded machine, not a speed check
    while status is None and time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"workbench app exited with {app.returncode}:\n{installed['log'].read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                status, body = r.status, r.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    assert status == 200, installed["log"].read_text()[-3000:]
    assert "Vision Workbench" in body


def test_nothing_is_written_into_the_installed_package(installed):
    """Runs last: caches and outputs went to the user cache and the current folder, never into the package."""
    assert set(_files(installed["site"])) == installed["before"]
