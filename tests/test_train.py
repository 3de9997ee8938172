import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.train import (
    JsonlLogger,
    TrainConfig,
    concat_all_gather,
    evaluate_accuracy,
    fit,
    lr_at,
    param_groups_weight_decay,
    read_jsonl,
)


def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0]) > 0).long()
    return torch.utils.data.TensorDataset(x, y)


def _ce(m, b):
    return nn.functional.cross_entropy(m(b[0]), b[1])


def test_lr_schedule_closed_form():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 10, 1.0, 0.01) == pytest.approx(0.01)


def test_param_groups_skip_norms_and_biases():
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups_weight_decay(m, 0.05)
    assert len(decay["params"]) == 1 and decay["params"][0] is m[0].weight
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_fit_learns_and_logs(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    ds = _data()
    before = evaluate_accuracy(model, ds.tensors[0], ds.tensors[1])
    res = fit(model, ds, _ce, TrainConfig(epochs=6, batch_size=16, lr=0.05, out_dir=str(tmp_path), log_every=4,
                                          progress=False),
              eval_fn=lambda m, e: {"acc": evaluate_accuracy(m, ds.tensors[0], ds.tensors[1])})
    assert res["steps"] == 6 * 8
    assert res["history"][-1]["acc"] > max(0.9, before)
    recs = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == list(range(1, 7))
    assert sum(r["kind"] == "step" for r in recs) == 12


def test_resume_equals_uninterrupted(tmp_path):
    ds = _data()
    cfg = dict(epochs=4, batch_size=16, lr=0.05, progress=False, seed=3)
    torch.manual_seed(1)
    full = nn.Linear(5, 2)
    fit(full, ds, _ce, TrainConfig(out_dir=str(tmp_path / "a"), **cfg))

    class Crash(Exception):
        pass

    def crash_in_epoch_3(m, step, total):
        if step == 2 * 8 + 1:
            raise Crash

    torch.manual_seed(1)
    with pytest.raises(Crash):
        fit(nn.Linear(5, 2), ds, _ce, TrainConfig(out_dir=str(tmp_path / "b"), **cfg), on_step=crash_in_epoch_3)
    torch.manual_seed(99)  # a new process: other initial weights, restored from last.pt (end of epoch 2)
    resumed = nn.Linear(5, 2)
    res = fit(resumed, ds, _ce, TrainConfig(out_dir=str(tmp_path / "b"), resume=True, **cfg))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4]
    assert torch.allclose(resumed.weight, full.weight, atol=1e-6), (resumed.weight - full.weight).abs().max()
    assert torch.allclose(resumed.bias, full.bias, atol=1e-6)


def test_lr_scale_groups_and_on_step():
    model = nn.Linear(5, 2)
    groups = [{"params": [model.weight], "lr_scale": 0.0, "weight_decay": 0.0},
              {"params": [model.bias], "lr_scale": 1.0, "weight_decay": 0.0}]
    w0 = model.weight.detach().clone()
    calls = []
    fit(model, _data(), _ce, TrainConfig(epochs=1, batch_size=32, lr=0.1, progress=False),
        param_groups=groups, on_step=lambda m, s, t: calls.append((s, t)))
    assert torch.equal(model.weight, w0)  # lr_scale 0 freezes the group
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_fit_rejects_nan_loss_and_empty_data():
    model = nn.Linear(5, 2)
    with pytest.raises(FloatingPointError, match="loss became"):
        fit(model, _data(), lambda m, b: m(b[0]).sum() * float("nan"), TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="no batches"):
        fit(model, _data(8), _ce, TrainConfig(epochs=1, batch_size=16, progress=False))
    with pytest.raises(ValueError):
        TrainConfig(optimizer="lamb")


def test_concat_all_gather_without_distributed_is_identity():
    t = torch.arange(6.0).view(3, 2)
    assert concat_all_gather(t) is t


def test_jsonl_logger(tmp_path):
    log = JsonlLogger(tmp_path / "m" / "x.jsonl")
    log.log(a=1, b=2.5)
    log.log(a=2)
    assert read_jsonl(tmp_path / "m" / "x.jsonl") == [{"a": 1, "b": 2.5}, {"a": 2}]


@pytest.mark.slow
def test_two_process_ddp_gloo_keeps_ranks_identical(tmp_path):
    script = Path(__file__).parent / "helpers" / "ddp_train.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script), str(tmp_path)]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])}
    import os

    env = {**os.environ, **env}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["world"] == 2 and a["steps"] == b["steps"] == 2 * (64 // 2 // 8)  # each rank sees half the data
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    assert a["seen"] != b["seen"]  # the ranks trained on different shards
    torch.manual_seed(123)
    init = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).state_dict()
    assert not torch.equal(init["0.weight"], a["state"]["0.weight"])
