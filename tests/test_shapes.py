import numpy as np
import pytest

from workbench.data import shapes
from workbench.data.shapes import CLASSES, ShapesConfig


@pytest.fixture(scope="module")
def single():
    return shapes.generate(ShapesConfig(n=400, size=64, seed=3))


@pytest.fixture(scope="module")
def multi():
    return shapes.generate(ShapesConfig(n=200, size=96, seed=5, min_objects=2, max_objects=3))


def test_deterministic_and_seed_dependent():
    a = shapes.generate(n=20, size=48, seed=1)
    b = shapes.generate(n=20, size=48, seed=1)
    c = shapes.generate(n=20, size=48, seed=2)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_shapes_and_types(single):
    assert single.images.shape == (400, 64, 64, 3) and single.images.dtype == np.uint8
    assert single.masks.shape == (400, 64, 64) and single.labels.dtype == np.int64
    assert len(single.captions) == len(single.objects) == 400


def test_labels_cover_all_classes_roughly_uniformly(single):
    counts = np.bincount(single.labels, minlength=len(CLASSES))
    assert counts.min() > 0
    # chi-square against uniform with 9 dof: 99.9% quantile is 27.9
    exp = len(single.labels) / len(CLASSES)
    assert ((counts - exp) ** 2 / exp).sum() < 27.9


def test_mask_agrees_with_label_and_geometry(single):
    for i in range(0, 400, 7):
        obj = single.objects[i][0]
        assert obj["shape"] == CLASSES[single.labels[i]]
        ids = set(np.unique(single.masks[i])) - {0}
        assert ids == {single.labels[i] + 1}
        # the object's pixels are centred on the recorded centre (within a few pixels)
        ys, xs = np.nonzero(single.masks[i])
        if obj["shape"] not in ("crescent", "triangle"):
            assert abs(xs.mean() + 0.5 - obj["cx"]) < 2.5 and abs(ys.mean() + 0.5 - obj["cy"]) < 2.5


def test_circle_area_matches_closed_form():
    d = shapes.generate(ShapesConfig(n=60, size=128, seed=0, classes=("circle",)))
    for i in range(60):
        r = d.objects[i][0]["radius"]
        area = (d.masks[i] > 0).sum()
        assert abs(area - np.pi * r * r) / (np.pi * r * r) < 0.05


def test_object_colour_is_painted(single):
    for i in range(0, 400, 11):
        color = np.array(shapes.COLORS[single.objects[i][0]["color"]], float)
        pix = single.images[i][single.masks[i] > 0].astype(float)
        assert np.abs(pix.mean(0) - color).max() < 25  # colour jitter is +-15 plus faint noise


def test_captions_describe_objects(single, multi):
    for i in range(50):
        o = single.objects[i][0]
        assert single.captions[i].startswith(f"a {o['size']} {o['color']} {o['shape']} on a ")
    for i in range(len(multi)):
        objs = multi.objects[i]
        cap = multi.captions[i]
        for o in objs:
            assert f"{o['size']} {o['color']} {o['shape']}" in cap
        if len(objs) == 2:
            dx, dy = objs[1]["cx"] - objs[0]["cx"], objs[1]["cy"] - objs[0]["cy"]
            rel = ("above" if dy > 0 else "below") if abs(dy) >= abs(dx) else ("left of" if dx > 0 else "right of")
            assert f" {rel} " in cap


def test_multi_object_masks_contain_every_visible_object(multi):
    counts = [len(o) for o in multi.objects]
    assert set(counts) == {2, 3}
    for i in range(len(multi)):
        ids = set(np.unique(multi.masks[i])) - {0}
        assert multi.labels[i] + 1 in ids  # the main object is drawn last, so never hidden
        assert ids <= {CLASSES.index(o["shape"]) + 1 for o in multi.objects[i]}


def test_class_and_background_restrictions():
    d = shapes.generate(ShapesConfig(n=50, seed=0, classes=("star", "ring"), backgrounds=("plain",)))
    assert set(d.labels.tolist()) <= {CLASSES.index("star"), CLASSES.index("ring")}
    assert all(c.endswith("on a plain background") for c in d.captions)


def test_plain_background_is_flat_and_striped_is_not():
    plain = shapes.generate(ShapesConfig(n=10, seed=0, backgrounds=("plain",)))
    striped = shapes.generate(ShapesConfig(n=10, seed=0, backgrounds=("striped",)))
    bg_std = lambda d: np.mean([d.images[i][d.masks[i] == 0].astype(float).std(0).mean() for i in range(10)])
    assert bg_std(plain) < 6 < bg_std(striped)


@pytest.mark.parametrize("kw", [dict(n=0), dict(size=8), dict(min_objects=3, max_objects=2),
                                dict(classes=("blob",)), dict(backgrounds=("sky",)), dict(classes=())])
def test_bad_configs(kw):
    with pytest.raises(ValueError):
        ShapesConfig(**kw)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    cfg = ShapesConfig(n=30, size=32, seed=9, max_objects=2)
    a = shapes.load(cfg)
    files = list((tmp_path / "shapes").glob("*.npz"))
    assert len(files) == 1
    b = shapes.load(cfg)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.objects == b.objects
    files[0].write_bytes(b"garbage")  # a damaged cache is regenerated, not trusted
    c = shapes.load(cfg)
    assert np.array_equal(a.masks, c.masks)


def test_render_single_sample():
    s = shapes.render("hexagon", "blue", "small", "checkered", seed=4, image_size=80)
    assert s["image"].shape == (80, 80, 3) and s["label"] == CLASSES.index("hexagon")
    assert s["caption"] == "a small blue hexagon on a checkered background"
    with pytest.raises(ValueError, match="unknown color"):
        shapes.render(color="mauve")


def test_dataset_targets():
    import torch

    cfg = ShapesConfig(n=12, size=32, seed=0, max_objects=2)
    ds = shapes.ShapesDataset(cfg, target="all")
    x, t = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert t["mask"].shape == (32, 32) and isinstance(t["caption"], str)
    x2, m = shapes.ShapesDataset(cfg, target="mask")[3]
    assert torch.equal(m, t["mask"]) and torch.equal(x, x2)
    with pytest.raises(ValueError):
        shapes.ShapesDataset(cfg, target="boxes")
