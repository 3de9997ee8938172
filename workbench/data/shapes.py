"""Procedural shapes: a deterministic, vectorised dataset for classification, segmentation,
self-supervision and image-text alignment.

Every sample is an RGB image with one to a few coloured objects from ten shape classes on a textured
background. It carries the class label of its *main* object (drawn last, on top), a per-pixel mask with
class ids (0 = background, ``class index + 1`` elsewhere) and a caption built from the attributes, e.g.
"a large red triangle above a small blue circle on a striped background".

The same ``ShapesConfig`` always gives the same data (all randomness comes from ``numpy.random.default_rng(seed)``);
``load`` caches generated sets on disk keyed by the configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import cache_dir

CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon",
    "diamond", "cross", "ring", "pentagon", "crescent",
)

CLASS_DESCRIPTIONS: dict[str, str] = {
    "circle": "a round shape with no corners",
    "square": "a shape with four equal sides and four right angles",
    "triangle": "a shape with three straight sides and three corners",
    "star": "a shape with five sharp points",
    "hexagon": "a shape with six equal sides, like a honeycomb cell",
    "diamond": "a square standing on one of its corners",
    "cross": "two bars crossing at right angles, like a plus sign",
    "ring": "a circle with a round hole in the middle",
    "pentagon": "a shape with five equal sides, like a house seen from the front",
    "crescent": "a curved shape like a thin slice of the moon",
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "green": (60, 185, 75),
    "blue": (55, 105, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 75, 210),
    "orange": (245, 135, 45),
    "cyan": (70, 220, 220),
    "white": (245, 245, 245),
}

# object radius as a fraction of the image side (single-object scenes; multi-object scenes use 0.7x)
SIZES: dict[str, float] = {"small": 0.14, "medium": 0.22, "large": 0.31}

BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "noisy", "gradient")
_BACKGROUND_WORDS = {
    "plain": "a plain background",
    "striped": "a striped background",
    "checkered": "a checkered background",
    "noisy": "a noisy background",
    "gradient": "a gradient background",
}


@dataclass(frozen=True)
class ShapesConfig:
    """What to generate. ``classes`` and ``backgrounds`` restrict the choices (labels stay global ids)."""

    n: int = 1000
    size: int = 64
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 1
    classes: tuple[str, ...] = CLASSES
    backgrounds: tuple[str, ...] = BACKGROUNDS

    def __post_init__(self):
        if not 1 <= self.n <= 2_000_000:
            raise ValueError(f"n must be between 1 and 2,000,000, got {self.n}")
        if not 16 <= self.size <= 512:
            raise ValueError(f"size must be between 16 and 512 pixels, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= 4:
            raise ValueError("need 1 <= min_objects <= max_objects <= 4, got "
                             f"{self.min_objects}, {self.max_objects}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "backgrounds", tuple(self.backgrounds))
        bad = [c for c in self.classes if c not in CLASSES]
        if bad or not self.classes:
            raise ValueError(f"unknown shape classes {bad}; choose from {list(CLASSES)}")
        badb = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if badb or not self.backgrounds:
            raise ValueError(f"unknown backgrounds {badb}; choose from {list(BACKGROUNDS)}")

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True) + "|v1"
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class ShapesData:
    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,), index into CLASSES of the main object
    masks: np.ndarray  # uint8 (N, S, S), 0 background, class index + 1
    captions: list[str]
    objects: list[list[dict[str, Any]]]
    config: ShapesConfig
    class_names: tuple[str, ...] = field(default=CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ShapesData:
        idx = np.asarray(idx)
        return ShapesData(self.images[idx], self.labels[idx], self.masks[idx],
                          [self.captions[i] for i in idx], [self.objects[i] for i in idx], self.config)


# ----------------------------------------------------------------------------------------------
# shape membership in local coordinates (u right, v down, unit = object radius)


def _regular_polygon(u, v, n):
    rho = np.hypot(u, v)
    phi = np.arctan2(u, -v)  # 0 points up: a vertex at the top
    sector = 2 * np.pi / n
    return rho * np.cos(np.mod(phi, sector) - sector / 2) <= np.cos(np.pi / n)


def _star(u, v, points=5, inner=0.45):
    rho = np.hypot(u, v)
    phi = np.arctan2(u, -v)
    sector = 2 * np.pi / points
    psi = sector / 2 - np.abs(np.mod(phi, sector) - sector / 2)  # 0 at a spike, sector/2 at a valley
    px, py = rho * np.cos(psi), rho * np.sin(psi)
    ax, ay = 1.0, 0.0
    bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    # inside when P lies on the same side of the edge AB as the origin
    cross_p = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    cross_o = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
    return (cross_p * cross_o >= 0) | (rho <= inner)


def _inside(name: str, u, v):
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":
        return _regular_polygon(u, v * 1.0 - 0.15, 3) & (np.hypot(u, v) <= 1.25)
    if name == "star":
        return _star(u, v)
    if name == "hexagon":
        return _regular_polygon(v, u, 6)
    if name == "diamond":
        return np.abs(u) / 0.75 + np.abs(v) <= 1.0
    if name == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.5 ** 2)
    if name == "pentagon":
        return _regular_polygon(u, v, 5)
    if name == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + (v + 0.1) ** 2 > 0.78 ** 2)
    raise ValueError(f"unknown shape {name!r}")


# ----------------------------------------------------------------------------------------------
# parameters


def _draw_specs(cfg: ShapesConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, m = cfg.n, cfg.max_objects
    class_ids = np.array([CLASSES.index(c) for c in cfg.classes])
    bg_ids = np.array([BACKGROUNDS.index(b) for b in cfg.backgrounds])
    n_obj = rng.integers(cfg.min_objects, cfg.max_objects + 1, size=n)
    cls = class_ids[rng.integers(0, len(class_ids), size=(n, m))]
    color = rng.integers(0, len(COLORS), size=(n, m))
    size = rng.integers(0, len(SIZES), size=(n, m))
    theta = np.deg2rad(rng.uniform(-20, 20, size=(n, m)))
    size_jitter = rng.uniform(0.9, 1.1, size=(n, m))
    # positions: multi-object scenes put objects in distinct cells of a 2x2 grid
    cells = np.argsort(rng.random((n, 4)), axis=1)[:, :m]
    jitter = rng.uniform(-0.08, 0.08, size=(n, m, 2))
    single_pos = rng.uniform(0.38, 0.62, size=(n, m, 2))
    bg = bg_ids[rng.integers(0, len(bg_ids), size=n)]
    base = rng.uniform(25, 110, size=(n, 1)) + rng.uniform(-18, 18, size=(n, 3))
    offset = rng.choice([-1.0, 1.0], size=(n, 1)) * rng.uniform(30, 55, size=(n, 1))
    bg_c1 = np.clip(base, 0, 255)
    bg_c2 = np.clip(base + offset + rng.uniform(-10, 10, size=(n, 3)), 0, 255)
    bg_period = rng.uniform(5, 11, size=n)
    bg_angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4], size=n)
    color_jitter = rng.uniform(-15, 15, size=(n, m, 3))
    return dict(n_obj=n_obj, cls=cls, color=color, size=size, theta=theta, size_jitter=size_jitter,
                cells=cells, jitter=jitter, single_pos=single_pos, bg=bg, bg_c1=bg_c1, bg_c2=bg_c2,
                bg_period=bg_period, bg_angle=bg_angle, color_jitter=color_jitter)


def _geometry(specs, S: int):
    """Centres and radii in pixels, (N, M) each."""
    multi = specs["n_obj"][:, None] > 1
    scale = np.where(multi, 0.7, 1.0)
    radius_frac = np.array(list(SIZES.values()))[specs["size"]] * specs["size_jitter"] * scale
    r = radius_frac * S
    cell_xy = np.stack([(specs["cells"] % 2) * 0.5 + 0.25, (specs["cells"] // 2) * 0.5 + 0.25], -1)
    pos = np.where(multi[..., None], cell_xy + specs["jitter"], specs["single_pos"])
    # keep objects inside the image
    lo = radius_frac[..., None] * 1.05
    pos = np.clip(pos, lo, 1 - lo)
    return pos[..., 0] * S, pos[..., 1] * S, r


def _backgrounds(specs, idx, S, rng):
    n = len(idx)
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    scale = S / 64.0
    c1 = specs["bg_c1"][idx][:, None, None, :].astype(np.float32)
    c2 = specs["bg_c2"][idx][:, None, None, :].astype(np.float32)
    kind = specs["bg"][idx]
    out = np.empty((n, S, S, 3), np.float32)
    out[:] = c1
    for name in ("striped", "checkered", "gradient"):
        sel = np.nonzero(kind == BACKGROUNDS.index(name))[0]
        if len(sel) == 0:
            continue
        period = (specs["bg_period"][idx[sel]] * scale).astype(np.float32)[:, None, None]
        ang = specs["bg_angle"][idx[sel]].astype(np.float32)[:, None, None]
        if name == "checkered":
            w = (np.floor(x[None] / period) + np.floor(y[None] / period)) % 2
        else:
            proj = x[None] * np.cos(ang) + y[None] * np.sin(ang)
            if name == "striped":
                w = np.floor(proj / period) % 2
            else:
                lo = proj.min(axis=(1, 2), keepdims=True)
                w = (proj - lo) / np.maximum(proj.max(axis=(1, 2), keepdims=True) - lo, 1e-6)
        w = w[..., None].astype(np.float32)
        out[sel] = c1[sel] + (c2[sel] - c1[sel]) * w
    noisy = kind == BACKGROUNDS.index("noisy")
    if noisy.any():
        out[noisy] += 22 * rng.standard_normal(size=(int(noisy.sum()), S, S, 3), dtype=np.float32)
    out += 3 * rng.standard_normal(size=out.shape, dtype=np.float32)  # faint sensor noise on every image
    return out


def _render(specs, S: int, rng: np.random.Generator, chunk: int = 1024):
    n, m = specs["cls"].shape
    cx, cy, r = _geometry(specs, S)
    images = np.empty((n, S, S, 3), np.uint8)
    masks = np.zeros((n, S, S), np.uint8)
    palette = np.array(list(COLORS.values()), np.float32)
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        canvas = _backgrounds(specs, idx, S, rng)
        seg = np.zeros((len(idx), S, S), np.uint8)
        # draw secondary objects first and the main object (slot 0) last, on top
        for slot in range(m - 1, -1, -1):
            active = specs["n_obj"][idx] > slot
            for c in np.unique(specs["cls"][idx, slot]):
                sel = np.nonzero(active & (specs["cls"][idx, slot] == c))[0]
                if len(sel) == 0:
                    continue
                g = idx[sel]
                dx = x[None] - cx[g, slot][:, None, None]
                dy = y[None] - cy[g, slot][:, None, None]
                ct, st = np.cos(specs["theta"][g, slot])[:, None, None], np.sin(specs["theta"][g, slot])[:, None, None]
                rr = r[g, slot][:, None, None]
                u = (dx * ct + dy * st) / rr
                v = (-dx * st + dy * ct) / rr
                inside = _inside(CLASSES[c], u, v)
                col = palette[specs["color"][g, slot]] + specs["color_jitter"][g, slot]
                sub = canvas[sel]
                sub[inside] = np.broadcast_to(col[:, None, None, :], sub.shape)[inside]
                canvas[sel] = sub
                sseg = seg[sel]
                sseg[inside] = c + 1
                seg[sel] = sseg
        images[idx] = np.clip(canvas, 0, 255).astype(np.uint8)
        masks[idx] = seg
    return images, masks, (cx, cy, r)


def _describe(specs, geo) -> tuple[list[str], list[list[dict[str, Any]]]]:
    cx, cy, r = geo
    color_names = list(COLORS)
    size_names = list(SIZES)
    captions, objects = [], []
    for i in range(len(specs["n_obj"])):
        objs = []
        for j in range(specs["n_obj"][i]):
            objs.append(dict(shape=CLASSES[specs["cls"][i, j]], color=color_names[specs["color"][i, j]],
                             size=size_names[specs["size"][i, j]], cx=float(cx[i, j]), cy=float(cy[i, j]),
                             radius=float(r[i, j])))
        phrases = [f"a {o['size']} {o['color']} {o['shape']}" for o in objs]
        bg = _BACKGROUND_WORDS[BACKGROUNDS[specs["bg"][i]]]
        if len(objs) == 1:
            text = phrases[0]
        elif len(objs) == 2:
            dx, dy = objs[1]["cx"] - objs[0]["cx"], objs[1]["cy"] - objs[0]["cy"]
            if abs(dy) >= abs(dx):
                rel = "above" if dy > 0 else "below"
            else:
                rel = "left of" if dx > 0 else "right of"
            text = f"{phrases[0]} {rel} {phrases[1]}"
        else:
            text = ", ".join(phrases[:-1]) + f" and {phrases[-1]}"
        captions.append(f"{text} on {bg}")
        objects.append(objs)
    return captions, objects


def generate(cfg: ShapesConfig | None = None, **kwargs) -> ShapesData:
    """Generate a shapes set (no cache). ``generate(n=100, size=64, seed=1)`` also works."""
    cfg = cfg if cfg is not None else ShapesConfig(**kwargs)
    rng = np.random.default_rng(cfg.seed)
    specs = _draw_specs(cfg, rng)
    images, masks, geo = _render(specs, cfg.size, rng)
    captions, objects = _describe(specs, geo)
    return ShapesData(images, specs["cls"][:, 0].astype(np.int64), masks, captions, objects, cfg)


def load(cfg: ShapesConfig | None = None, *, cache: bool = True, **kwargs) -> ShapesData:
    """Like :func:`generate`, but cached on disk (``workbench.data.cache.cache_dir('shapes')``)."""
    cfg = cfg if cfg is not None else ShapesConfig(**kwargs)
    if not cache:
        return generate(cfg)
    path = cache_dir("shapes") / f"{cfg.key()}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return ShapesData(z["images"], z["labels"], z["masks"], meta["captions"], meta["objects"], cfg)
        except Exception:  # a damaged cache file is regenerated
            path.unlink(missing_ok=True)
    data = generate(cfg)
    # a name of its own per writer: parallel processes (pytest-xdist workers, several studies) may generate the
    # same set at once; each writes its own file and the atomic rename keeps one complete copy
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    meta = json.dumps({"captions": data.captions, "objects": data.objects})
    np.savez(tmp, images=data.images, labels=data.labels, masks=data.masks, meta=np.array(meta))
    tmp.replace(path)
    return data


def backgrounds(n: int, size: int = 64, seed: int = 0,
                backgrounds: tuple[str, ...] = BACKGROUNDS) -> np.ndarray:
    """``n`` object-free backgrounds (uint8 (N, S, S, 3)) drawn from the same distribution as the scenes'
    backgrounds: textures, colours and noise, no objects (e.g. for background-swap augmentation)."""
    cfg = ShapesConfig(n=n, size=size, seed=seed, backgrounds=backgrounds)
    rng = np.random.default_rng(seed)
    specs = _draw_specs(cfg, rng)
    out = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, 1024):
        idx = np.arange(start, min(n, start + 1024))
        out[idx] = np.clip(_backgrounds(specs, idx, size, rng), 0, 255).astype(np.uint8)
    return out


def render(shape: str = "star", color: str = "red", size: str = "large", background: str = "striped",
           seed: int = 0, image_size: int = 64) -> dict[str, Any]:
    """Draw one single-object sample with the given attributes (the explorer widget and app pickers use this).

    Returns ``{"image", "mask", "label", "caption"}``; position, rotation and textures come from ``seed``.
    """
    for value, allowed, what in ((shape, CLASSES, "shape"), (color, tuple(COLORS), "color"),
                                 (size, tuple(SIZES), "size"), (background, BACKGROUNDS, "background")):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose from {list(allowed)}")
    cfg = ShapesConfig(n=1, size=image_size, seed=seed, backgrounds=(background,), classes=(shape,))
    rng = np.random.default_rng(seed)
    specs = _draw_specs(cfg, rng)
    specs["color"][:] = list(COLORS).index(color)
    specs["size"][:] = list(SIZES).index(size)
    images, masks, geo = _render(specs, image_size, rng)
    captions, _ = _describe(specs, geo)
    return {"image": images[0], "mask": masks[0], "label": CLASSES.index(shape), "caption": captions[0]}


def tensors(cfg: ShapesConfig | None = None, **kwargs):
    """``(x, y)``: float images (N, 3, S, S) in [0, 1] and int64 labels of a (cached) shapes set."""
    import torch

    from .transforms import images_to_tensor

    d = load(cfg, **kwargs)
    return images_to_tensor(d.images), torch.from_numpy(d.labels).long()


class ShapesDataset:
    """A ``torch.utils.data.Dataset`` over a shapes set.

    Yields ``(image, target)`` with ``image`` a float tensor (3, S, S) in [0, 1] (after ``transform``) and
    ``target`` the label (``target="label"``), the mask as a long tensor (``"mask"``), the caption (``"caption"``)
    or a dict of all three (``"all"``).
    """

    def __init__(self, data: ShapesData | ShapesConfig | None = None, transform=None, target: str = "label",
                 **kwargs):
        if target not in ("label", "mask", "caption", "all"):
            raise ValueError(f"target must be 'label', 'mask', 'caption' or 'all', got {target!r}")
        if data is None or isinstance(data, ShapesConfig):
            data = load(data, **kwargs)
        self.data = data
        self.transform = transform
        self.target = target

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        import torch

        from .transforms import to_tensor

        img = to_tensor(self.data.images[i])
        if self.transform is not None:
            img = self.transform(img)
        if self.target == "label":
            return img, int(self.data.labels[i])
        if self.target == "mask":
            return img, torch.from_numpy(self.data.masks[i].astype(np.int64))
        if self.target == "caption":
            return img, self.data.captions[i]
        return img, {"label": int(self.data.labels[i]),
                     "mask": torch.from_numpy(self.data.masks[i].astype(np.int64)),
                     "caption": self.data.captions[i]}
