"""Run under torchrun with 2 processes: a few DDP steps of workbench.train.fit, then each rank saves its weights."""
import sys

import torch
from torch import nn

from workbench.train import TrainConfig, fit, setup_distributed

out = sys.argv[1]
rank, world, _ = setup_distributed()
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 6, generator=g)
y = (x[:, 0] + x[:, 1] > 0).long()
ds = torch.utils.data.TensorDataset(x, y)
torch.manual_seed(123)  # identical initial weights on every rank
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
seen = []


def loss_fn(m, batch):
    seen.append(batch[0][:, 0].sum().item())
    return nn.functional.cross_entropy(m(batch[0]), batch[1])


res = fit(model, ds, loss_fn, TrainConfig(epochs=2, batch_size=8, lr=0.05, warmup_epochs=0, progress=False, seed=1))
torch.save({"state": model.state_dict(), "steps": res["steps"], "seen": seen, "world": world}, f"{out}/rank{rank}.pt")
# both ranks reach the teardown together, as workbench.studies.scale does: without the barrier rank 0 (which hosts the
# store) once aborted in gloo's teardown ("terminate called without an active exception") after both had saved
torch.distributed.barrier()
torch.distributed.destroy_process_group()
