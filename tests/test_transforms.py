import colorsys

import numpy as np
import pytest
import torch
from scipy import ndimage

from workbench.data import transforms as T


def _img(seed=0, h=24, w=30):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_hsv_round_trip_matches_colorsys():
    x = _img()
    hsv = T.rgb_to_hsv(x)
    for (i, j) in [(0, 0), (5, 7), (23, 29), (10, 3)]:
        ref = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
        assert np.allclose(hsv[:, i, j].tolist(), ref, atol=1e-5)
    assert torch.allclose(T.hsv_to_rgb(hsv), x, atol=1e-5)


def test_grayscale_weights():
    x = _img()
    g = T.rgb_to_grayscale(x)
    assert torch.allclose(g[0], 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_matches_scipy(sigma):
    x = _img(h=32, w=40)
    ours = T.gaussian_blur(x, sigma)
    # torch 'reflect' padding is scipy's 'mirror'; radius ceil(3 sigma) == scipy's int(3 sigma + 0.5) here
    ref = np.stack([ndimage.gaussian_filter(c.numpy().astype(np.float64), sigma, mode="mirror", truncate=3.0)
                    for c in x])
    assert np.abs(ours.numpy() - ref).max() < 1e-5


def test_solarize_and_normalize():
    x = _img()
    s = T.Solarize(0.5, p=1.0)(x)
    assert torch.equal(s, torch.where(x >= 0.5, 1 - x, x))
    n = T.Normalize()
    y = n(x)
    assert torch.allclose(y[1], (x[1] - 0.456) / 0.224) and torch.allclose(n.inverse(y), x, atol=1e-6)


def test_random_resized_crop_area_and_ratio_within_bounds():
    t = T.RandomResizedCrop(16, scale=(0.3, 0.6), ratio=(0.75, 1.333))
    g = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(300):
        top, left, h, w = t.params(100, 120, g)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        areas.append(h * w / 12000)
        assert 0.7 < w / h < 1.4
    areas = np.array(areas)
    assert areas.min() > 0.28 and areas.max() < 0.62 and 0.4 < areas.mean() < 0.5


def test_crop_output_is_resized_region_and_reproducible():
    x = _img(h=40, w=40)
    t = T.RandomResizedCrop(20)
    a = t(x, torch.Generator().manual_seed(5))
    b = t(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3, 20, 20)
    top, left, h, w = t.params(40, 40, torch.Generator().manual_seed(5))
    assert torch.allclose(a, T.resized_crop(x, top, left, h, w, (20, 20)))


def test_flip_probability_and_grayscale():
    x = _img()
    g = torch.Generator().manual_seed(1)
    flips = sum(torch.equal(T.RandomHorizontalFlip(0.5)(x, g), x.flip(-1)) for _ in range(400))
    assert 160 < flips < 240  # binomial(400, 0.5): mean 200, sd 10
    gray = T.RandomGrayscale(1.0)(x)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_color_jitter_brightness_only_scales():
    x = _img() * 0.5
    y = T.ColorJitter(brightness=0.4)(x, torch.Generator().manual_seed(2))
    f = (y / x).flatten()
    assert torch.allclose(f, f[0].expand_as(f), atol=1e-5) and 0.6 <= f[0] <= 1.4


def test_two_view_views_differ_and_compose_passes_generator():
    x = _img(h=48, w=48)
    tv = T.byol_two_view(32)
    a1, b1 = tv(x, torch.Generator().manual_seed(3))
    a2, b2 = tv(x, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.allclose(a1, b1)


def test_bad_inputs():
    with pytest.raises(ValueError):
        T.RandomHorizontalFlip()(torch.rand(8, 8))
    with pytest.raises(ValueError):
        T.RandomApply(T.Solarize(), p=1.5)
    with pytest.raises(ValueError):
        T.RandomResizedCrop(8, scale=(0.0, 1.0))


def test_to_tensor_matches_the_hand_formula_for_every_byte_value():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    a[0, :, 0] = [0, 1, 127, 128, 254, 255, 3]
    hand32 = torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)
    hand64 = torch.from_numpy(a / 255.0).permute(2, 0, 1).float()
    t = T.to_tensor(a)
    assert t.dtype == torch.float32 and t.shape == (3, 5, 7)
    assert torch.equal(t, hand32) and torch.equal(t, hand64)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert torch.equal(T.to_tensor(every)[0].flatten(), torch.tensor([v / 255.0 for v in range(256)], dtype=torch.float32))
    assert torch.equal(T.images_to_tensor(np.stack([a, a[::-1]])), torch.stack([hand32, hand32.flip(1)]))


def test_to_tensor_other_dtypes_views_and_grey():
    f = np.random.default_rng(1).random((4, 6, 3))
    assert torch.equal(T.to_tensor(f), torch.from_numpy(f.astype(np.float32)).permute(2, 0, 1))
    a = np.random.default_rng(2).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    flipped = a[:, ::-1]                                   # negative strides
    assert torch.equal(T.to_tensor(flipped), T.to_tensor(np.ascontiguousarray(flipped)))
    ro = a.copy()
    ro.flags.writeable = False
    assert torch.equal(T.to_tensor(ro), T.to_tensor(a))
    grey = a[..., 0]
    g = T.to_tensor(grey)
    assert g.shape == (3, 4, 6) and all(torch.equal(g[c], torch.from_numpy(grey / 255.0).float()) for c in range(3))
    assert torch.equal(T.to_tensor(torch.from_numpy(a)), T.to_tensor(a))
    before = a.copy()
    T.to_tensor(a)
    assert np.array_equal(a, before)
    with pytest.raises(ValueError):
        T.to_tensor(np.zeros((2, 3, 4, 3), dtype=np.uint8))
