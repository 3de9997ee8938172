"""Real images that installed packages ship: scikit-image's and scikit-learn's sample photos (a small
natural-image set with random-crop sampling) and scikit-learn's handwritten digits (a real labelled set).
Nothing is downloaded."""
from __future__ import annotations

import functools

import numpy as np

# name -> (package, loader); every one of these ships inside the installed wheel
_PHOTOS = {
    "astronaut": ("skimage", "astronaut"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "motorcycle": ("skimage", "stereo_motorcycle"),
    "hubble": ("skimage", "hubble_deep_field"),
    "immunohistochemistry": ("skimage", "immunohistochemistry"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "camera": ("skimage", "camera"),
    "coins": ("skimage", "coins"),
    "moon": ("skimage", "moon"),
    "brick": ("skimage", "brick"),
    "grass": ("skimage", "grass"),
    "gravel": ("skimage", "gravel"),
}


def photo_names() -> list[str]:
    return list(_PHOTOS)


@functools.cache
def _load(name: str) -> np.ndarray:
    pkg, what = _PHOTOS[name]
    if pkg == "skimage":
        import skimage.data

        a = getattr(skimage.data, what)()
        if isinstance(a, tuple):  # stereo pairs
            a = a[0]
    else:
        from sklearn.datasets import load_sample_image

        a = load_sample_image(what)
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = a[..., :3].astype(np.uint8)
    a.setflags(write=False)
    return a


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as a read-only uint8 (H, W, 3) array."""
    if name not in _PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {photo_names()}")
    return _load(name)


class NaturalCrops:
    """``n`` random resized crops (``size`` px, float (3, size, size) in [0, 1]) from the bundled photos.

    Crop ``i`` is a deterministic function of ``(seed, i)``; ``transform`` (e.g. a two-view augmentation)
    is applied on top with the global torch RNG.
    """

    def __init__(self, n: int = 1000, size: int = 64, seed: int = 0, scale=(0.2, 1.0), names=None,
                 transform=None):
        import torch

        from .transforms import RandomResizedCrop, to_tensor

        self.names = list(names) if names is not None else photo_names()
        self.n, self.size, self.seed, self.transform = n, size, seed, transform
        self._photos = [to_tensor(np.array(load_photo(nm))) for nm in self.names]
        self._crop = RandomResizedCrop(size, scale=scale)
        self._torch = torch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = self._torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        photo = self._photos[int(self._torch.randint(0, len(self._photos), (), generator=g))]
        x = self._crop(photo, g)
        if self._torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        return self.transform(x) if self.transform is not None else x


def digits(split: str = "train", size: int | None = None, rgb: bool = False, test_fraction: float = 0.25,
           seed: int = 0):
    """scikit-learn's 8x8 handwritten digits (1,797 images) as ``(images, labels)`` tensors.

    ``images`` is float (N, C, S, S) in [0, 1] (C = 3 if ``rgb``), upsampled bilinearly to ``size`` if given.
    The split is a fixed stratified split by ``seed``.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if split != "all":
        rng = np.random.default_rng(seed)
        test_idx = []
        for c in range(10):
            idx = np.nonzero(d.target == c)[0]
            rng.shuffle(idx)
            test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
        mask = np.zeros(len(y), bool)
        mask[test_idx] = True
        sel = torch.from_numpy(mask if split == "test" else ~mask)
        x, y = x[sel], y[sel]
    if size is not None and size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    if rgb:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x, y
