import io

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import natural
from workbench.data.images import center_square, prepare_image


def test_every_bundled_photo_loads_as_rgb():
    names = natural.photo_names()
    assert len(names) >= 10
    for n in names:
        a = natural.load_photo(n)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 100
    with pytest.raises(ValueError, match="unknown photo"):
        natural.load_photo("mona_lisa")


def test_natural_crops_deterministic():
    a = natural.NaturalCrops(n=5, size=32, seed=1)
    b = natural.NaturalCrops(n=5, size=32, seed=1)
    assert torch.equal(a[2], b[2]) and a[2].shape == (3, 32, 32)
    assert not torch.equal(a[2], a[3])
    with pytest.raises(IndexError):
        a[5]


def test_digits_split_is_disjoint_and_stratified():
    xtr, ytr = natural.digits("train")
    xte, yte = natural.digits("test")
    assert len(xtr) + len(xte) == 1797 and xtr.shape[1:] == (1, 8, 8)
    assert np.allclose(np.bincount(yte.numpy()) / np.bincount(natural.digits("all")[1].numpy()), 0.25, atol=0.02)
    # no test image appears in train
    tr = {tuple(v) for v in xtr.flatten(1).numpy().round(4)}
    overlap = sum(tuple(v) in tr for v in xte.flatten(1).numpy().round(4))
    assert overlap < 5  # a handful of digits are pixel-identical duplicates in the original data
    x32, _ = natural.digits("test", size=32, rgb=True)
    assert x32.shape[1:] == (3, 32, 32) and 0 <= x32.min() and x32.max() <= 1


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_prepare_image_conversions(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out, notes = prepare_image(_png_bytes(rgb))
    assert np.array_equal(out, rgb) and notes == []
    gray, notes = prepare_image(rgb[..., 0])
    assert gray.shape == (20, 30, 3) and np.array_equal(gray[..., 2], rgb[..., 0]) and "grayscale" in notes[0]
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    out, notes = prepare_image(_png_bytes(rgba))
    assert np.array_equal(out, rgb) and "transparency" in notes[0]
    sixteen = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    p = tmp_path / "deep.png"
    Image.fromarray(sixteen).save(p)
    out, notes = prepare_image(p)
    assert out.shape == (20, 30, 3) and out.max() == 255 and out.min() == 0
    floats, _ = prepare_image(rgb.astype(np.float32) / 255)
    assert np.abs(floats.astype(int) - rgb).max() <= 1


def test_prepare_image_resizes_and_refuses(tmp_path):
    big = np.zeros((300, 200, 3), np.uint8)
    out, notes = prepare_image(big, max_side=100)
    assert out.shape == (100, 67, 3) and "resized" in notes[0]
    out, _ = prepare_image(big, size=32)
    assert out.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="too large"):
        prepare_image(_png_bytes(big), max_pixels=1000)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(ValueError, match="not an image"):
        prepare_image(bad)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(_png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:200])
    with pytest.raises(ValueError):
        prepare_image(trunc)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        prepare_image(empty)
    with pytest.raises(ValueError, match="NaN"):
        prepare_image(np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        prepare_image(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="no image"):
        prepare_image(None)
    assert center_square(big).shape == (200, 200, 3)
