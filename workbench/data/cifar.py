"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches, read with a restricted
unpickler (only dicts, lists, bytes and numpy arrays may be reconstructed — never arbitrary code)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}

_FILES = {
    "cifar10": {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]},
    "cifar100": {True: ["train"], False: ["test"]},
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_batch(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CIFAR batch not found: {path}")
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise ValueError(f"{path.name} is not a CIFAR python batch: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path.name} is not a CIFAR python batch (expected a dict, got {type(d).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def load_cifar(root, name: str = "cifar10", train: bool = True):
    """Return ``(images uint8 (N, 32, 32, 3), labels int64 (N,))`` from the batches in ``root``.

    ``root`` is the extracted folder (``cifar-10-batches-py`` or ``cifar-100-python``). CIFAR-100 returns the
    fine labels.
    """
    if name not in _FILES:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    root = Path(root)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    xs, ys = [], []
    for fn in _FILES[name][train]:
        d = read_batch(root / fn)
        if "data" not in d or label_key not in d:
            raise ValueError(f"{fn} lacks the keys 'data' and '{label_key}' (found {sorted(d)}); "
                             f"is it a {name} batch?")
        data = np.asarray(d["data"])
        labels = np.asarray(d[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise ValueError(f"{fn}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
        if len(labels) != len(data):
            raise ValueError(f"{fn}: {len(data)} images but {len(labels)} labels")
        n_classes = 10 if name == "cifar10" else 100
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{fn}: labels outside 0..{n_classes - 1}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


class CIFAR:
    """Dataset view: items ``(float (3, 32, 32) in [0, 1], label)``."""

    def __init__(self, root, name: str = "cifar10", train: bool = True, transform=None):
        self.images, self.labels = load_cifar(root, name, train)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from .transforms import to_tensor

        x = to_tensor(self.images[i])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])
