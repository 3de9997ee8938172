"""Function tests of the "Balanced sparsity" tab and the sparse figures/measurements behind it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.sparse import measure, prune
from workbench.viz import sparse as vz

torch.set_num_threads(1)


def test_live_speed_rows_and_speedups_are_consistent():
    from workbench.sparse.kernels import cpp
    calls = []
    first = not cpp.ready()   # the first use in this process announces the build before it starts
    rows = measure.live_speed(256, 4, (0.5, 0.9), 32, repeats=3, progress=lambda f, t: calls.append((f, t)))
    assert [f for f, _ in calls] == ([0.0] if first else []) + [0.5, 1.0]
    assert cpp.ready() and (not first or "building the C++ kernels" in calls[0][1])
    assert {(r["sparsity"], r["method"]) for r in rows} == {(s, m) for s in (0.5, 0.9) for m in measure.LIVE_METHODS}
    dense = {r["sparsity"]: r["median_ms"] for r in rows if r["method"] == "dense"}
    for r in rows:
        assert r["median_ms"] > 0
        # kernel rows: over the best dense product; model rows: over the dense model (its own time in dense_ms)
        base = r["dense_ms"] if r["method"] == "model" else dense[r["sparsity"]]
        assert r["speedup"] == pytest.approx(base / r["median_ms"])
        if r["method"] in ("balanced", "model"):
            assert r["path"] and r["reason"]


def test_live_speed_announces_the_first_build_before_waiting_for_it(monkeypatch):
    """A fresh process builds the C++ kernels at its first product (about half a minute): the live measurement says
    so on its progress bar first, then builds (or finds it cannot, where numba runs), then measures."""
    from workbench.sparse.kernels import cpp
    cpp.library()
    lib, st = cpp._STATE["lib"], cpp._STATE["status"]   # this machine's outcome, replayed by the fake build
    events = []

    def fake_build():
        events.append("build")
        return lib, st
    monkeypatch.setattr(cpp, "_STATE", {"lib": None, "tried": False, "status": None})
    monkeypatch.setattr(cpp, "_build", fake_build)
    assert not cpp.ready()
    measure.live_speed(128, 1, (0.5,), 32, methods=("dense", "balanced"), repeats=1,
                       progress=lambda f, t: events.append((f, t)))
    assert events[0] == (0.0, "building the C++ kernels (first use only, about half a minute)")
    assert events[1] == "build" and events[-1][0] == 1.0 and cpp.ready()


@pytest.mark.parametrize("kw,match", [(dict(size=8192), "too large"), (dict(size=1000), "multiple of the bank"),
                                      (dict(batch=0), "batch"), (dict(batch=1000), "batch"),
                                      (dict(sparsities=(1.2,)), "sparsity"), (dict(methods=("fast",)), "methods")])
def test_live_speed_refuses_bad_requests(kw, match):
    args = dict(size=256, batch=1, sparsities=(0.5,), bank_size=32)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        measure.live_speed(**args)


def test_load_balance_counts():
    W = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    masks = measure.masks_for(W, 0.75, 16)
    bal = measure.load_balance(masks, 16)
    assert set(np.unique(bal["balanced"]["per_bank"])) == {4}
    assert bal["balanced"]["imbalance"] == pytest.approx(1.0)
    assert bal["nm"]["imbalance"] == pytest.approx(1.0)
    assert bal["unstructured"]["per_row"].sum() == masks["unstructured"].sum()
    # closed form of the imbalance: max row count over mean row count
    pr = masks["unstructured"].sum(1).double()
    assert bal["unstructured"]["imbalance"] == pytest.approx(float(pr.max() / pr.mean()))


def test_figures_hold_the_data():
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    masks = measure.masks_for(W, 0.75, 16, methods=("balanced", "unstructured"))
    fig = vz.pattern_figure(W, masks, rows=8, cols=32, bank_size=16)
    assert len(fig.data) == 3
    z = np.asarray(fig.data[1].z, dtype=float)
    assert np.isnan(z).sum() == (~masks["balanced"][:8, :32]).sum()
    h = vz.bank_histogram(measure.load_balance(masks, 16), 16)
    assert list(h.data[0].x) == [4] and list(h.data[0].y) == [1.0]
    rows = [dict(sparsity=s, method=m, median_ms=1.0, speedup=sp) for s in (0.5, 0.9) for m, sp in (("dense", 1.0), ("balanced", 2 * s))]
    f = vz.live_speed_figure(rows)
    assert [list(t.y) for t in f.data if t.name == "CPU balanced"] == [[1.0, 1.8]]


def test_accuracy_figure_means_over_seeds():
    curves = {"balanced": {0.5: [0.7, 0.5], 0.9: [0.4, 0.2]}}
    fig = vz.accuracy_figure(curves, [0.9, 0.8])
    line = [t for t in fig.data if t.name == "balanced"][0]
    assert list(line.x) == [0.5, 0.9] and list(line.y) == [pytest.approx(0.6), pytest.approx(0.3)]
    dense = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(dense) == 1 and dense[0].y0 == pytest.approx(0.85)


def test_records_speed_figure_selects_rows():
    rows = [dict(size=4096, batch=1, target=s, method=m, median_ms=t, speedup_vs_dense=1.0, gbps=1.0)
            for s in (0.5, 0.9) for m, t in (("dense_numpy", 2.0), ("balanced", s))]
    fig = vz.records_speed_figure(rows, x="target", size=4096, batch=1)
    assert [list(t.y) for t in fig.data if t.name == "balanced"] == [[0.5, 0.9]]
    with pytest.raises(ValueError, match="no committed records"):
        vz.records_speed_figure(rows, x="target", size=1024)


def test_app_handlers(monkeypatch):
    import workbench.apps.sparse as sparse_app
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(measure, "example_weight", lambda name=None: ("w", W))
    pat, per_bank, per_row, txt = sparse_app.patterns(0.75, 32)
    assert "| balanced | 25.00% | 1.00 |" in txt           # exactly 8 of every 32 kept: perfectly balanced rows
    assert len(pat.data) == 1 + len(measure.masks_for(W, 0.75, 32))
    with pytest.raises(ValueError, match="sparsity"):
        sparse_app.patterns(1.5, 32)
    fig, table = sparse_app.measure(256, 2, 0.8, 32, ["dense", "balanced"])
    assert "| 0.800 |" in table and "balanced" in table
    with pytest.raises(ValueError, match="matrix size"):
        sparse_app.measure(4096, 1, 0.9, 32, ["dense"])
    with pytest.raises(ValueError, match="task"):
        sparse_app.accuracy("nope")
    fig, txt = sparse_app.crossover("cuda")          # the packaged GPU table, shown on a machine without a GPU
    cells = [(x, y, v) for tr in fig.data if tr.z is not None for y, row in zip(tr.y, tr.z) for x, v in zip(tr.x, row)]
    assert cells and "NVIDIA H200" in txt and "crossover_cuda.json" in txt and "/" not in txt.split(":")[1].split()[0]
    with pytest.raises(ValueError, match="device"):
        sparse_app.crossover("tpu")


def test_gpu_summary_reads_the_committed_gpu_records():
    from workbench.demos import sparse as demo

    def row(size, batch, method, ms, qms, **kw):
        return dict(size=size, batch=batch, target=0.9, method=method, median_ms=ms, queued_ms=qms, device="GPU X",
                    **kw)

    rows = [row(4096, 1, "balanced_fp32", 0.056, 0.0102, kernel="spmv", speedup_vs_dense=1.37,
                speedup_vs_cusparse=4.15, queued_speedup_vs_dense=3.21, queued_speedup_vs_cusparse=1.89,
                queued_pct_bw=18.2),
            row(16384, 1, "balanced_fp32", 0.1016, 0.060, kernel="spmv", speedup_vs_dense=2.99,
                speedup_vs_cusparse=2.33, queued_speedup_vs_dense=4.43, queued_speedup_vs_cusparse=1.2,
                queued_pct_bw=48.4),
            row(4096, 1, "cublas_fp32", 0.077, 0.033)]
    lines = demo.gpu_summary(rows).splitlines()
    assert lines == ["GPU: GPU X",
                     "4096^2 batch 1 (spmv): per call 56 us, 1.4x cuBLAS, 4.2x cuSPARSE; queued 10 us, 3.2x cuBLAS, "
                     "1.9x cuSPARSE, 18% of HBM bandwidth",
                     "16384^2 batch 1 (spmv): per call 102 us, 3x cuBLAS, 2.3x cuSPARSE; queued 60 us, 4.4x cuBLAS, "
                     "1.2x cuSPARSE, 48% of HBM bandwidth"]
    assert demo.gpu_summary([]).startswith("No committed GPU benchmark")


def test_demo_checkpoint_and_sparse_swin_match_dense():
    from workbench.studies.sparse import demo_model
    sparse, ck = demo_model(sparse=True)
    dense, _ = demo_model(sparse=False)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x), rtol=1e-4, atol=1e-4)
    # the checkpoint's MLP weights are balanced: at most k kept per bank of 32
    w = ck.state_dict["layers.2.blocks.0.mlp.fc1.weight"].float()   # 64 inputs: two banks of 32 per row
    k = prune.kept_per_bank(ck.meta["config"]["sparsity"], 32)
    assert ((w != 0).reshape(w.shape[0], -1, 32).sum(-1) <= k).all()
    name, ex = measure.example_weight()
    assert name in ck.extra["dense_examples"] and (ex != 0).float().mean() > 0.9
