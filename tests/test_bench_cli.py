import json
import subprocess
import sys

import pytest

from workbench import bench


def test_interleaved_alternates_order_and_counts():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = bench.interleaved(fns, repeats=4, warmup=1, setup=lambda: calls.append("s"))
    assert {k: len(v) for k, v in out.items()} == {"a": 4, "b": 4}
    timed = [c for c in calls[2:] if c != "s"]
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert calls[2:].count("s") == 8


def test_summarize_closed_form():
    s = bench.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median": 3.0, "p95": 5.0, "min": 1.0, "n": 5}
    with pytest.raises(ValueError):
        bench.summarize([])


def test_write_results(tmp_path):
    rows = [{"method": "dense", "ms": 1.5}, {"method": "sparse", "ms": 0.5}]
    j, m = bench.write_results("demo", rows, title="Demo", out_dir=tmp_path, notes="ratio 3x")
    data = json.loads(j.read_text())
    assert data["rows"] == rows and data["machine"]["cores"] >= 1
    text = m.read_text()
    assert "| method | ms |" in text and "| sparse | 0.5 |" in text and "ratio 3x" in text


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_and_lists():
    r = _cli("info")
    assert r.returncode == 0 and "torch" in r.stdout and "cupy" in r.stdout
    r = _cli("train", "--list")
    assert r.returncode == 0 and "failed to import" not in r.stdout
    r = _cli("train", "no-such-job")
    assert r.returncode == 2 and "unknown job" in r.stderr
    r = _cli("bench", "--list")
    assert r.returncode == 0
    r = _cli("bench", "no-such-bench")
    assert r.returncode == 2


def test_cli_app_refuses_unknown_tab():
    r = _cli("app", "--tab", "nonexistent", "--port", "0")
    assert r.returncode != 0 and "unknown tab" in r.stderr


def test_resolve_devices_and_sync():
    import torch

    has = torch.cuda.is_available()
    assert bench.resolve_devices("cpu") == ["cpu"]
    assert bench.resolve_devices("all") == (["cpu", "cuda"] if has else ["cpu"])
    assert bench.resolve_devices("auto") == (["cuda"] if has else ["cpu"])
    assert bench.sync_for("cpu") is None
    assert bench.sync_for("cuda:0") is torch.cuda.synchronize
    if not has:
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            bench.resolve_devices("cuda")
    with pytest.raises(SystemExit):
        bench.resolve_devices("tpu")


def test_cli_lab_serves_the_notebooks_on_loopback():
    import os
    import time
    import urllib.error
    import urllib.request

    from workbench.apps.common import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "lab", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "JUPYTER_RUNTIME_DIR": os.environ.get("TMPDIR", "/tmp")})
    try:
        status = None
        deadline = time.time() + 90
        while time.time() < deadline and status is None:
            time.sleep(1)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/lab", method="GET")
                opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                                          {"redirect_request": lambda *a, **k: None}))
                status = opener.open(req, timeout=5).status
            except urllib.error.HTTPError as e:
                status = e.code
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert proc.poll() is None, proc.stdout.read()[-2000:]
        assert status in (200, 302), status  # 302: the login redirect of a token-protected server
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    assert "--notebook-dir=" in out and "notebooks" in out and "--ip=127.0.0.1" in out
    assert "--LabApp.news_url=None" in out and "--LabApp.user_settings_dir=" in out


def test_lab_settings_turn_off_the_news_prompt():
    """`workbench lab` hands JupyterLab a user-settings folder that answers the "get notified about official Jupyter
    news?" prompt with Never (fetchNews "false", a string in JupyterLab's schema) and checks for no updates."""
    import json

    from workbench.cli import lab_settings_dir

    f = lab_settings_dir() / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(f.read_text()) == {"fetchNews": "false", "checkForUpdates": False}


def test_bench_sparse_crossover_measures_only_the_table(tmp_path, monkeypatch):
    """``workbench bench sparse --crossover`` writes the dispatcher's table (and no benchmark tables): the table a
    user measures for this machine, which ``sparsify_`` then reads."""
    from workbench.benchmarks import sparse as bs
    from workbench.sparse import dispatch

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "table.json"
    bs.main(["--device", "cpu", "--quick", "--crossover", "--crossover-out", str(out), "--threads", "1",
             "--rounds", "1", "--settle", "0"])
    t = dispatch._validate_table(json.loads(out.read_text()))
    assert t["sizes"] == [256, 512] and t["batches"] == [1, 16] and t["rounds"] == 1 and t["block_warmup"] == 2
    assert not any(tmp_path.rglob("sparse*.json"))                 # the benchmark grid did not run


def test_bench_sparse_gpu_crossover_without_a_gpu_says_so(monkeypatch):
    import workbench.benchmarks.sparse as bs
    from workbench.sparse.kernels import gpu
    monkeypatch.setattr(gpu, "available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        bs.main(["--device", "cuda", "--crossover", "--quick"])
