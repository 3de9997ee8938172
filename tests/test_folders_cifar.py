import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.cifar import CIFAR, load_cifar
from workbench.data.folders import ImageFolder


def _write_folder(root, n_per_class=3):
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (10 + i, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "dogs" / "gray.png")


def test_image_folder(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "cats" / "readme.txt").write_text("not an image, ignored by extension")
    ds = ImageFolder(tmp_path, size=16)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 7
    x, y = ds[6]
    assert x.shape == (3, 16, 16) and y == 1 and x.dtype == torch.float32
    raw = np.asarray(Image.open(tmp_path / "cats" / "0.png"))
    x0, y0 = ImageFolder(tmp_path)[0]
    assert y0 == 0 and torch.allclose(x0, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="broken.jpg"):
        ds[0]


def _write_cifar10(root, n=4):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n)),
             b"batch_label": b"x"}
        with open(root / name, "wb") as f:
            pickle.dump(d, f)


def test_cifar10_round_trip(tmp_path):
    _write_cifar10(tmp_path)
    x, y = load_cifar(tmp_path, "cifar10", train=True)
    assert x.shape == (20, 32, 32, 3) and y.shape == (20,)
    with open(tmp_path / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    # channel-major rows become HWC images
    assert np.array_equal(x[0, :, :, 1], first[b"data"][0, 1024:2048].reshape(32, 32))
    ds = CIFAR(tmp_path, train=False)
    assert len(ds) == 4 and ds[0][0].shape == (3, 32, 32)


def test_cifar100_fine_labels(tmp_path):
    d = {b"data": np.zeros((3, 3072), np.uint8), b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 2, 3]}
    with open(tmp_path / "train", "wb") as f:
        pickle.dump(d, f)
    x, y = load_cifar(tmp_path, "cifar100", train=True)
    assert y.tolist() == [5, 99, 0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_cifar(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil()}, f)
    with pytest.raises(ValueError, match="refusing"):
        load_cifar(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match="lacks the keys"):
        load_cifar(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="not a CIFAR"):
        load_cifar(tmp_path)
    with pytest.raises(ValueError, match="cifar10"):
        load_cifar(tmp_path, "imagenet")
