"""What every paper's demo module shares: one thread-safe model cache, input images and a panel type."""
from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.data import shapes
from workbench.data.images import center_square, prepare_image

_LOCK = threading.Lock()
_CACHE: dict[Any, Any] = {}
_KEY_LOCKS: dict[Any, threading.Lock] = {}


def cached(fn: Callable) -> Callable:
    """Memoise a loader by its arguments; concurrent first calls build the value once (per key lock).
    Cached models are shared read-only: anything a request needs to look inside goes through
    :mod:`workbench.inspect`, never through state on the model."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        key = (fn.__module__, fn.__qualname__, args, tuple(sorted(kwargs.items())))
        if key in _CACHE:
            return _CACHE[key]
        with _LOCK:
            lock = _KEY_LOCKS.setdefault(key, threading.Lock())
        with lock:
            if key not in _CACHE:
                _CACHE[key] = fn(*args, **kwargs)
        return _CACHE[key]

    wrapper.cache_clear = lambda: [_CACHE.pop(k) for k in list(_CACHE) if k[:2] == (fn.__module__, fn.__qualname__)]
    return wrapper


def clear_cache(module: str) -> None:
    """Forget every value cached by the loaders of ``module`` (e.g. after its demo checkpoint was replaced)."""
    for k in [k for k in list(_CACHE) if k[0] == module]:
        _CACHE.pop(k, None)


@dataclass
class Panel:
    """What a panel function returns: figures by name (in display order), a markdown summary, notices for
    the user (e.g. "the image was resized") and the numbers behind them (for tests and notebooks)."""

    figures: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    notices: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def check_int(name: str, value, lo: int, hi: int) -> int:
    """An integer control in [lo, hi] (floats that are whole numbers and numeric strings are accepted)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
        raise ValueError(f"{name} must be a whole number between {lo} and {hi}, got {value!r}")
    return int(f)


def check_float(name: str, value, lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(f) and (lo < f if open_lo else lo <= f) and (f < hi if open_hi else f <= hi)
    if not ok:
        lo_s, hi_s = ("(" if open_lo else "["), (")" if open_hi else "]")
        raise ValueError(f"{name} must be in {lo_s}{lo:g}, {hi:g}{hi_s}, got {value!r}")
    return f


def check_choice(name: str, value, choices) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def read_image(value, size: int | None = None) -> tuple[np.ndarray, list[str]]:
    """An uploaded image (path, bytes, PIL image, array, or a gradio file dict) as uint8 (H, W, 3), resized to
    ``size`` x ``size`` (centre square) when given, plus notices. Anything that is not a readable image raises
    ``ValueError("could not read the image: ...")`` without internal paths."""
    if value is None or (isinstance(value, str) and value == ""):
        raise ValueError("Please choose or upload an image first.")
    if isinstance(value, dict) and "path" in value:
        value = value["path"]
    if type(value).__name__ == "BadUpload":   # apps.common.upload_image: gradio could not open the file
        raise ValueError(f"could not read the image: the file is not an image that can be read ({value})")
    try:
        arr, notices = prepare_image(value)
    except ValueError as e:
        raise ValueError(f"could not read the image: {_strip_paths(str(e))}") from None
    notices = list(notices)
    if size is not None:
        h, w = arr.shape[:2]
        if (h, w) != (size, size):
            arr, more = prepare_image(np.ascontiguousarray(center_square(arr)), size=size)
            notices += [n for n in more if "resized" not in n]
            notices.append(f"the image ({w}x{h}) is used as its centre square resized to {size}x{size} px, the "
                           "demo model's input size")
    return arr, notices


def _strip_paths(msg: str) -> str:
    """Drop file-system paths from a message shown to a user."""
    import re

    return re.sub(r"['\"]?(/[\w.\-]+)+/?['\"]?", "<file>", msg)


def user_message(e: BaseException) -> str:
    """A short message for the page: the exception's text without quotes or file-system paths."""
    return _strip_paths(str(e).strip("'\"")) or type(e).__name__


def sample_image(shape: str, seed: int = 0, color: str = "red", size: str = "large", background: str = "striped",
                 image_size: int = 64) -> np.ndarray:
    """A rendered single-object shapes sample (uint8 (S, S, 3))."""
    seed = check_int("seed", seed, 0, 1_000_000)
    return shapes.render(shape, color, size, background, seed=seed, image_size=image_size)["image"]


def shape_sample_panel(shape: str = "star", color: str = "red", size: str = "large", background: str = "striped",
                       seed: int = 0, image_size: int = 64) -> Panel:
    """One shapes sample and its mask (figure ``"sample"``), its caption as the text (the hub's welcome tab and the
    tour's shapes explorer)."""
    from workbench.viz import core  # local: keeps plotly out of demos.common (apps.common imports it)

    seed = check_int("seed", seed, 0, 1_000_000)
    s = shapes.render(shape, color, size, background, seed=seed, image_size=image_size)
    fig = core.image_grid([s["image"], core.colorize_labels(s["mask"])], titles=["image", "mask"], cols=2,
                          height_per_row=300)
    return Panel({"sample": fig}, s["caption"], values={"image": s["image"], "mask": s["mask"]})
