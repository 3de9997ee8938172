"""Image transforms in torch only (no torchvision).

Every transform is a callable ``t(x, g=None)`` on a float tensor (C, H, W) with values in [0, 1];
``g`` is an optional ``torch.Generator`` that makes the random draws reproducible. ``Compose`` passes
it on. The two-view recipe used by MoBY/BYOL is :func:`byol_two_view`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _rand(g: torch.Generator | None) -> float:
    return float(torch.rand((), generator=g))


def _uniform(lo: float, hi: float, g) -> float:
    return lo + (hi - lo) * _rand(g)


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"transforms take a (C, H, W) tensor, got {getattr(x, 'shape', type(x))}")


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x, g=None):
        for t in self.transforms:
            x = t(x, g)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomApply:
    """Apply ``t`` with probability ``p``."""

    def __init__(self, t: Callable, p: float):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {p}")
        self.t, self.p = t, p

    def __call__(self, x, g=None):
        return self.t(x, g) if _rand(g) < self.p else x

    def __repr__(self):
        return f"RandomApply({self.t!r}, p={self.p})"


class Resize:
    def __init__(self, size: int | tuple[int, int], mode: str = "bilinear"):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mode = mode

    def __call__(self, x, g=None):
        _check(x)
        kw = {"align_corners": False, "antialias": True} if self.mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x[None], size=self.size, mode=self.mode, **kw)[0]


def resized_crop(x: torch.Tensor, top: int, left: int, h: int, w: int, size: tuple[int, int]) -> torch.Tensor:
    crop = x[:, top:top + h, left:left + w]
    return F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform), resize to ``size``.

    The sampling follows the usual Inception-style procedure: 10 attempts, then a central crop fallback.
    """

    def __init__(self, size: int | tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        self.scale, self.ratio = scale, ratio

    def params(self, H: int, W: int, g=None) -> tuple[int, int, int, int]:
        area = H * W
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(*self.scale, g)
            ar = math.exp(_uniform(*log_r, g))
            w = int(round(math.sqrt(target * ar)))
            h = int(round(math.sqrt(target / ar)))
            if 0 < w <= W and 0 < h <= H:
                top = int(torch.randint(0, H - h + 1, (), generator=g))
                left = int(torch.randint(0, W - w + 1, (), generator=g))
                return top, left, h, w
        in_ratio = W / H
        if in_ratio < self.ratio[0]:
            w, h = W, int(round(W / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = H, int(round(H * self.ratio[1]))
        else:
            w, h = W, H
        return (H - h) // 2, (W - w) // 2, h, w

    def __call__(self, x, g=None):
        _check(x)
        top, left, h, w = self.params(x.shape[1], x.shape[2], g)
        return resized_crop(x, top, left, h, w, self.size)

    def __repr__(self):
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x, g=None):
        _check(x)
        return x.flip(-1) if _rand(g) < self.p else x

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, (3, H, W) -> (1, H, W)."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[0], x[1], x[2]
    maxc, _ = x.max(0)
    minc, _ = x.min(0)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dsafe = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dsafe, (maxc - g) / dsafe, (maxc - b) / dsafe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v])


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[0], x[1], x[2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (r, g_, b) in enumerate(choices):
        m = i == k
        out[0] = torch.where(m, r, out[0])
        out[1] = torch.where(m, g_, out[1])
        out[2] = torch.where(m, b, out[2])
    return out


def adjust_brightness(x, f):
    return (x * f).clamp(0, 1)


def adjust_contrast(x, f):
    mean = rgb_to_grayscale(x).mean() if x.shape[0] == 3 else x.mean()
    return (mean + f * (x - mean)).clamp(0, 1)


def adjust_saturation(x, f):
    gray = rgb_to_grayscale(x)
    return (gray + f * (x - gray)).clamp(0, 1)


def adjust_hue(x, shift):
    hsv = rgb_to_hsv(x)
    hsv[0] = (hsv[0] + shift) % 1.0
    return hsv_to_rgb(hsv).clamp(0, 1)


class ColorJitter:
    """Brightness, contrast, saturation (factors in [1-a, 1+a]) and hue (shift in [-h, h]) in random order."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, x, g=None):
        _check(x)
        order = torch.randperm(4, generator=g).tolist()
        for k in order:
            if k == 0 and self.brightness > 0:
                x = adjust_brightness(x, _uniform(max(0, 1 - self.brightness), 1 + self.brightness, g))
            elif k == 1 and self.contrast > 0:
                x = adjust_contrast(x, _uniform(max(0, 1 - self.contrast), 1 + self.contrast, g))
            elif k == 2 and self.saturation > 0 and x.shape[0] == 3:
                x = adjust_saturation(x, _uniform(max(0, 1 - self.saturation), 1 + self.saturation, g))
            elif k == 3 and self.hue > 0 and x.shape[0] == 3:
                x = adjust_hue(x, _uniform(-self.hue, self.hue, g))
        return x

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


class RandomGrayscale:
    def __init__(self, p: float = 0.2):
        self.p = p

    def __call__(self, x, g=None):
        _check(x)
        if _rand(g) < self.p and x.shape[0] == 3:
            return rgb_to_grayscale(x).expand(3, -1, -1).clone()
        return x

    def __repr__(self):
        return f"RandomGrayscale(p={self.p})"


def gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    radius = radius if radius is not None else max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    k = gaussian_kernel1d(sigma).to(x)
    r = (len(k) - 1) // 2
    C = x.shape[0]
    y = x[None]
    r_w, r_h = min(r, x.shape[2] - 1), min(r, x.shape[1] - 1)
    kw, kh = k[r - r_w:r + r_w + 1], k[r - r_h:r + r_h + 1]
    kw, kh = kw / kw.sum(), kh / kh.sum()
    y = F.conv2d(F.pad(y, (r_w, r_w, 0, 0), mode="reflect"), kw.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    y = F.conv2d(F.pad(y, (0, 0, r_h, r_h), mode="reflect"), kh.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return y[0]


class GaussianBlur:
    """Blur with sigma uniform in ``sigma`` (BYOL: (0.1, 2.0) pixels at 224 px; scaled by ``ref_size``)."""

    def __init__(self, sigma=(0.1, 2.0), p: float = 1.0, ref_size: int | None = None):
        self.sigma, self.p, self.ref_size = sigma, p, ref_size

    def __call__(self, x, g=None):
        _check(x)
        if _rand(g) >= self.p:
            return x
        s = _uniform(*self.sigma, g)
        if self.ref_size:
            s *= x.shape[-1] / self.ref_size
        return gaussian_blur(x, max(s, 1e-3))

    def __repr__(self):
        return f"GaussianBlur(sigma={self.sigma}, p={self.p})"


class Solarize:
    """Invert values at or above ``threshold`` with probability ``p``."""

    def __init__(self, threshold: float = 0.5, p: float = 1.0):
        self.threshold, self.p = threshold, p

    def __call__(self, x, g=None):
        _check(x)
        if _rand(g) >= self.p:
            return x
        return torch.where(x >= self.threshold, 1.0 - x, x)

    def __repr__(self):
        return f"Solarize(threshold={self.threshold}, p={self.p})"


class Normalize:
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x, g=None):
        _check(x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, x):
        return x * self.std.to(x) + self.mean.to(x)

    def __repr__(self):
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class TwoView:
    """Two independently augmented views of one image: ``(view1(x), view2(x))``."""

    def __init__(self, view1: Callable, view2: Callable):
        self.view1, self.view2 = view1, view2

    def __call__(self, x, g=None):
        return self.view1(x, g), self.view2(x, g)


def byol_view(size: int, *, blur_p: float, solarize_p: float, scale=(0.08, 1.0), normalize: bool = True,
              ref_size: int = 224) -> Compose:
    """One BYOL/MoBY view: crop, flip, colour jitter (p 0.8), grayscale (p 0.2), blur, solarise, normalise."""
    ts = [
        RandomResizedCrop(size, scale=scale),
        RandomHorizontalFlip(),
        RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8),
        RandomGrayscale(p=0.2),
        GaussianBlur((0.1, 2.0), p=blur_p, ref_size=ref_size),
        Solarize(0.5, p=solarize_p),
    ]
    if normalize:
        ts.append(Normalize())
    return Compose(ts)


def byol_two_view(size: int, scale=(0.08, 1.0), normalize: bool = True) -> TwoView:
    """The asymmetric two-view recipe of BYOL used by MoBY: view 1 always blurred, never solarised;
    view 2 blurred with p 0.1 and solarised with p 0.2."""
    return TwoView(byol_view(size, blur_p=1.0, solarize_p=0.0, scale=scale, normalize=normalize),
                   byol_view(size, blur_p=0.1, solarize_p=0.2, scale=scale, normalize=normalize))


def to_tensor(img) -> torch.Tensor:
    """An (H, W, C) image (numpy or torch) -> float (C, H, W): uint8 is scaled to [0, 1] (``/ 255``), any other
    dtype is only cast to float32; a grey (H, W) image becomes three equal channels. The input is never
    modified."""
    if hasattr(img, "flags"):  # numpy: torch cannot wrap negative strides (flipped views) nor read-only memory
        img = img.copy() if not img.flags.writeable else np.ascontiguousarray(img)
    t = torch.as_tensor(img)
    if t.ndim == 2:
        t = t[..., None].expand(-1, -1, 3)
    if t.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {tuple(t.shape)}")
    return t.permute(2, 0, 1).float().div(255.0) if t.dtype == torch.uint8 else t.permute(2, 0, 1).float()


def images_to_tensor(images) -> torch.Tensor:
    """A batch of uint8 (N, H, W, 3) images (numpy or torch) -> float (N, 3, H, W) in [0, 1]; like :func:`to_tensor`,
    other dtypes are only cast to float32."""
    if hasattr(images, "flags"):
        images = images.copy() if not images.flags.writeable else np.ascontiguousarray(images)
    t = torch.as_tensor(images)
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise ValueError(f"expected a (N, H, W, C) image batch, got shape {tuple(t.shape)}")
    t = t.permute(0, 3, 1, 2)
    return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Channel normalisation of (3, H, W) or (N, 3, H, W) float images in [0, 1] (ImageNet statistics)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * s + m


class TensorImages(torch.utils.data.Dataset):
    """In-memory images as a Dataset: uint8 or float (N, 3, H, W) images, optional labels.

    Each item is converted to float in [0, 1], passed through ``transform`` (``t(x, g)``, global RNG) and,
    with ``normalize=True``, normalised with the ImageNet statistics. Yields ``x`` or ``(x, label)``.
    """

    def __init__(self, images: torch.Tensor, labels=None, transform: Callable | None = None,
                 normalize: bool = True):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, (None if labels is None else torch.as_tensor(labels).long())
        self.transform, self.normalize = transform, normalize

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i]
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if self.transform is not None:
            x = self.transform(x)
        if self.normalize:
            x = normalize(x)
        return x if self.labels is None else (x, self.labels[i])
