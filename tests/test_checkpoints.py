import os
import pickle

import pytest
import torch
from torch import nn

from workbench.checkpoints import (
    CheckpointError,
    demo_path,
    load_checkpoint,
    load_demo,
    load_into,
    save_checkpoint,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_round_trip_with_metadata(tmp_path):
    m = _model()
    p = save_checkpoint(tmp_path / "m.pt", m, config={"depth": 2, "lr": 0.1}, command="workbench train x",
                        data_seed=7, extra={"epoch": 3})
    ck = load_checkpoint(p)
    assert ck.meta["config"] == {"depth": 2, "lr": 0.1} and ck.meta["command"] == "workbench train x"
    assert ck.meta["data_seed"] == 7 and ck.extra == {"epoch": 3} and "torch" in ck.meta["versions"]
    m2 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    load_into(m2, p)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_half_precision_demo_checkpoints(tmp_path):
    m = _model()
    p = save_checkpoint(tmp_path / "h.pt", m, half=True)
    ck = load_checkpoint(p)
    assert ck.state_dict["0.weight"].dtype == torch.float16 and ck.meta["dtype"] == "float16"
    m2 = _model()
    with torch.no_grad():
        m2[0].weight.zero_()
    load_into(m2, ck)
    assert m2[0].weight.dtype == torch.float32
    assert torch.allclose(m2[0].weight, m[0].weight, atol=1e-3)
    assert ck.state_dict["1.num_batches_tracked"].dtype == torch.int64


def test_missing_truncated_and_empty(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    p = save_checkpoint(tmp_path / "m.pt", _model())
    data = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refuses_pickled_code(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="weights_only|refusing|not a readable"):
        load_checkpoint(p)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pkl")


def test_mismatch_lists_keys_and_shapes(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", _model())
    other = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError) as e:
        load_into(other, p)
    msg = str(e.value)
    assert "shape mismatch" in msg and "0.weight" in msg and "missing keys" in msg and "3.weight" in msg


def test_plain_and_wrapped_state_dicts(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": m.state_dict(), "epoch": 5}, tmp_path / "official.pth")
    for name in ("plain.pt", "official.pth"):
        ck = load_checkpoint(tmp_path / name)
        assert torch.equal(ck.state_dict["2.bias"], m.state_dict()["2.bias"])
    assert load_checkpoint(tmp_path / "official.pth").meta == {"epoch": 5}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert torch.equal(load_checkpoint(tmp_path / "m.safetensors").state_dict["0.weight"], m[0].weight.detach())


def test_demo_checkpoint_missing_explains_command():
    assert demo_path("x").name == "x.pt"
    with pytest.raises(CheckpointError, match="workbench train some-job"):
        load_demo("does_not_exist", command="workbench train some-job")


def test_committed_demo_checkpoints_are_small_safe_and_documented():
    from workbench.checkpoints import DEMO_DIR, demo_index

    rows = demo_index()
    readme = (DEMO_DIR / "README.md").read_text() if (DEMO_DIR / "README.md").exists() else ""
    for r in rows:
        assert r["command"] and r["command"].startswith("workbench train"), r
        assert r["megabytes"] < 10, f"{r['file']} is {r['megabytes']} MB; demo checkpoints stay a few MB"
        assert f"`{r['file']}`" in readme, f"{r['file']} is missing from {DEMO_DIR}/README.md " \
                                           "(run `workbench checkpoints --write-readme`)"


def test_load_into_runs_module_load_hooks_before_judging_keys(tmp_path):
    """A CBN checkpoint from before the separate burn-in counter (no `iteration` buffers) loads: the layer's own
    load hook fills the counter, so it is not a missing key."""
    from workbench import cbn

    m = cbn.make_model("cbn", window=4, widths=(8, 16), in_chans=3, seed=0)
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith(".iteration")}
    assert len(sd) < len(m.state_dict())
    save_checkpoint(tmp_path / "old.pt", sd)
    fresh = cbn.make_model("cbn", window=4, widths=(8, 16), in_chans=3, seed=1)
    load_into(fresh, tmp_path / "old.pt")
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_failed_load_leaves_the_model_unchanged(tmp_path):
    m = _model()
    sd = {k: v + 1 for k, v in m.state_dict().items() if k != "2.bias"}
    save_checkpoint(tmp_path / "partial.pt", sd)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError, match="missing keys"):
        load_into(m, tmp_path / "partial.pt")
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
