"""Turning whatever a user hands us into a clean RGB uint8 array, or a clear error.

Used by every app tab and loader: paths, bytes, PIL images and arrays are accepted; grayscale, RGBA,
16-bit and float images are converted; images above ``max_pixels`` are refused before decoding and
images larger than ``max_side`` are resized with a notice.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

MAX_PIXELS = 50_000_000  # refused above this (decompression bombs, absurd uploads)
MAX_SIDE = 1024  # resized (with a notice) above this


def _from_pil(im, max_pixels: int):
    from PIL import Image

    if im.width * im.height > max_pixels:
        raise ValueError(f"image is too large ({im.width}x{im.height} pixels); the limit is {max_pixels:,} pixels")
    if im.width < 1 or im.height < 1:
        raise ValueError("image is empty")
    try:
        im.load()
    except Exception as e:  # truncated or corrupt data
        raise ValueError(f"could not decode the image: {e}") from None
    notices = []
    if im.mode in ("RGBA", "LA", "P", "PA"):
        if im.mode != "RGBA":
            im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.split()[-1])
        im, notices = bg, ["transparency was flattened onto white"]
    elif im.mode in ("I;16", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12) * 255
        im, notices = Image.fromarray(a.astype(np.uint8)).convert("RGB"), ["a high-bit-depth image was rescaled to 8 bits"]
    elif im.mode != "RGB":
        notices = [f"a {im.mode} image was converted to RGB"]
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy(), notices


def _from_array(a: np.ndarray):
    notices = []
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
        notices.append("a grayscale image was converted to RGB")
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError("image is empty")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
        notices.append("a grayscale image was converted to RGB")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError("image contains NaN or infinite values")
        if a.min() >= 0 and a.max() <= 1.0:
            a = a * 255
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255
        a = (a[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
        notices.append("transparency was flattened onto white")
    return np.ascontiguousarray(a), notices


def prepare_image(x, size: int | tuple[int, int] | None = None, *, max_pixels: int = MAX_PIXELS,
                  max_side: int = MAX_SIDE) -> tuple[np.ndarray, list[str]]:
    """Return ``(uint8 array (H, W, 3), notices)`` for a path, bytes, PIL image or array.

    ``size`` resizes to (size, size) (or (H, W)); otherwise images whose longer side exceeds ``max_side``
    are shrunk to it, with a notice. Raises ``ValueError`` with a readable message for non-images.
    """
    from PIL import Image, UnidentifiedImageError

    if x is None:
        raise ValueError("no image was given")
    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, before decoding
    try:
        if isinstance(x, (str, Path)):
            p = Path(x)
            if not p.exists():
                raise ValueError(f"image file not found: {p}")
            if p.stat().st_size == 0:
                raise ValueError(f"image file is empty: {p.name}")
            with Image.open(p) as im:
                arr, notices = _from_pil(im, max_pixels)
        elif isinstance(x, (bytes, bytearray)):
            with Image.open(io.BytesIO(x)) as im:
                arr, notices = _from_pil(im, max_pixels)
        elif isinstance(x, Image.Image):
            arr, notices = _from_pil(x, max_pixels)
        elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
            a = np.asarray(x)
            if a.size > max_pixels * 4:
                raise ValueError(f"image is too large ({a.shape}); the limit is {max_pixels:,} pixels")
            arr, notices = _from_array(a)
        else:
            raise ValueError(f"cannot read an image from a {type(x).__name__}")
    except UnidentifiedImageError:
        raise ValueError("the file is not an image that can be read (PNG, JPEG, BMP, GIF, TIFF, WebP ...)") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"could not decode the image: {e}") from None
    h, w = arr.shape[:2]
    target = None
    if size is not None:
        target = (size, size) if isinstance(size, int) else tuple(size)
    elif max(h, w) > max_side:
        s = max_side / max(h, w)
        target = (max(1, round(h * s)), max(1, round(w * s)))
        notices.append(f"the image ({w}x{h}) was resized to {target[1]}x{target[0]}")
    if target is not None and target != (h, w):
        arr = np.array(Image.fromarray(arr).resize((target[1], target[0]), Image.BICUBIC))
    return arr, notices


def center_square(img: np.ndarray) -> np.ndarray:
    """Central square crop of an (H, W, C) array."""
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
