"""DNL demo: click a pixel and see where the NL and DNL blocks of the committed segmentation networks look from it.

Used by the "DNL" app tab, the explorer of notebook 05 and the tests. Models: ``dnl_seg_nl`` and ``dnl_seg_dnl``,
the seed-0 networks of ``workbench train dnl-study --commit --save-demo`` (64 px multi-object shapes scenes,
ImageNet-normalised inputs). Attention rows are read through :func:`workbench.dnl.attention_maps`, which keeps
nothing on the shared cached models, so concurrent requests cannot see each other's maps.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from workbench import dnl
from workbench.checkpoints import load_demo, load_into
from workbench.data import natural, shapes
from workbench.data.transforms import normalize, to_tensor
from workbench.demos.common import Panel, cached, check_float, check_int, read_image
from workbench.studies.dnl import boundary_cells

COMMAND = "workbench train dnl-study --commit --save-demo"
HEADS = ("nl", "dnl")
SCENE = "shapes scene"
UPLOAD = "upload"
SIZE = 64


@cached
def model(head: str) -> dnl.SegNet:
    """The committed demo SegNet with a ``head`` block (eval mode, float32). ``CheckpointError`` names the command
    that regenerates a missing checkpoint."""
    if head not in HEADS:
        raise ValueError(f"no demo model for head {head!r}; choose one of {HEADS}")
    ckpt = load_demo(f"dnl_seg_{head}", COMMAND)
    net = dnl.SegNet(dnl.SegNetConfig(**ckpt.meta.get("config", {})))
    load_into(net, ckpt)
    return net.eval()


@cached
def _with_temperature(t: float) -> dnl.SegNet:
    """A private copy of the DNL model with another pairwise temperature (the shared one is never changed)."""
    m = copy.deepcopy(model("dnl"))
    m.block.temperature = t
    return m


def sources() -> list[str]:
    return [SCENE] + [f"photo: {n}" for n in natural.photo_names()]


def image(source: str, seed: int = 0, upload=None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 (64, 64, 3) image, label mask (64, 64) for shapes scenes else None, notices)."""
    if source == UPLOAD:
        if upload is None:
            raise ValueError("Choose an image file to upload (or pick a shapes scene or a bundled photo).")
        arr, notices = read_image(upload, size=SIZE)
        return arr, None, notices
    if source == SCENE:
        seed = check_int("scene seed", seed, 0, 100_000)
        d = shapes.generate(n=1, size=SIZE, seed=seed, min_objects=3, max_objects=4)
        return np.ascontiguousarray(d.images[0]), d.masks[0].astype(np.int64), []
    if source.startswith("photo: "):
        name = source[len("photo: "):]
        if name not in natural.photo_names():
            raise ValueError(f"unknown photo {name!r}; pick one of the listed photos or {UPLOAD!r}")
        arr, _ = read_image(np.array(natural.load_photo(name)), size=SIZE)
        return arr, None, []
    raise ValueError(f"unknown image source {source!r}; choose a shapes scene, a bundled photo or {UPLOAD!r}")


@dataclass
class Exploration:
    """Everything one query on one image gives: maps on the (h, w) feature grid, predictions at image size."""
    image: np.ndarray                # uint8 (S, S, 3)
    query: tuple[int, int]           # (row, col) in image pixels
    query_cell: tuple[int, int]      # (row, col) on the feature grid
    temperature: float
    maps: dict                       # name -> (h, w) float array (each sums to 1)
    segmentation: dict               # head -> (S, S) int labels
    mask: np.ndarray | None = None   # ground-truth labels (S, S) for shapes scenes, else None
    stats: dict | None = None        # within-region share / boundary numbers when the mask is known


def explore(img, query: tuple[float, float] | None = None, temperature: float | None = None,
            mask=None) -> Exploration:
    """Run the NL and DNL demo models on ``img`` (uint8 (S, S, 3)) with one query pixel (row, col).

    Maps: "NL attention" (the NL softmax row of the query), "DNL pairwise" (whitened, with ``temperature`` if given,
    else the trained one), "DNL unary" and "NL implicit unary" (softmax of mu_q . k). ``mask`` adds the
    within-region share and the unary mass on boundary cells.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    s = img.shape[0]
    if img.shape[1] != s:
        raise ValueError(f"expected a square image, got {img.shape[1]}x{img.shape[0]}")
    if query is None:
        query = (s // 2, s // 2)
    try:
        row, col = (float(v) for v in query)
    except (TypeError, ValueError):
        raise ValueError(f"query must be a (row, col) pair of numbers, got {query!r}") from None
    if not (math.isfinite(row) and math.isfinite(col)):
        raise ValueError(f"query must be finite, got {query!r}")
    row, col = int(row), int(col)
    if not (0 <= row < s and 0 <= col < s):
        raise ValueError(f"query pixel ({row}, {col}) is outside the {s}x{s} image")
    t_used = model("dnl").block.temperature
    if temperature is not None:
        t_used = check_float("temperature", temperature, 0.0, 1000.0, open_lo=True)
    x = normalize(to_tensor(img)).unsqueeze(0)
    maps, seg = {}, {}
    for head in HEADS:
        net = _with_temperature(t_used) if head == "dnl" and t_used != model("dnl").block.temperature else model(head)
        hw = (s // net.cfg.stride, s // net.cfg.stride)
        q = dnl.query_index(row, col, (s, s), hw)
        with torch.no_grad():
            logits, found = dnl.attention_maps(net, x, queries=[q])
        e = found["block"]
        h, w = e["hw"]
        seg[head] = logits.argmax(1)[0].numpy()
        if head == "nl":
            maps["NL attention"] = e["pairwise"][0, 0].reshape(h, w).numpy()
            maps["NL implicit unary"] = e["unary"][0].reshape(h, w).numpy()
        else:
            maps["DNL pairwise"] = e["pairwise"][0, 0].reshape(h, w).numpy()
            maps["DNL unary"] = e["unary"][0].reshape(h, w).numpy()
    cell = (q // hw[1], q % hw[1])
    stats = None
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask)).long().unsqueeze(0)
        if m.shape[1:] != (s, s):
            raise ValueError(f"mask shape {tuple(m.shape[1:])} does not match the {s}x{s} image")
        stats = {}
        for name in ("NL attention", "DNL pairwise"):
            stats[name] = dnl.within_region_share(torch.from_numpy(maps[name]).reshape(1, 1, -1), m, hw, queries=[q],
                                                  num_labels=max(int(m.max()) + 1, 2))
        b = boundary_cells(m, hw)[0]
        for name in ("NL implicit unary", "DNL unary"):
            u = torch.from_numpy(maps[name]).reshape(-1).double()
            mass, uni = float((u * b).sum()), float(b.mean())
            stats[name] = {"mass": mass, "uniform": uni, "lift": mass / uni if uni > 0 else float("nan")}
    return Exploration(img, (row, col), cell, t_used, maps, seg, None if mask is None else np.asarray(mask), stats)


def click_to_query(index, query=None, image_size: int = SIZE, display: int = 256):
    """A click (x, y) on the enlarged image -> (row, col) in model-input pixels (``query`` when there is none)."""
    if index is None or len(index) != 2:
        return query
    x, y = index
    f = display / image_size
    return int(min(max(y / f, 0), image_size - 1)), int(min(max(x / f, 0), image_size - 1))


def panel(source: str = SCENE, seed: int = 0, temperature: float = 0.05, query=(44, 46), upload=None,
          display: int = 256) -> Panel:
    """The app tab's / explorer's view: the clickable image, the attention maps, the segmentations, a summary."""
    from workbench.viz import dnl as vz

    img, mask, notices = image(source, seed, upload)
    if query is None:
        query = (SIZE // 2, SIZE // 2)
    exp = explore(img, query, temperature, mask=mask)
    return Panel({"attention": vz.attention_figure(exp), "segmentation": vz.segmentation_figure(exp),
                  "overview": vz.overview_figure(exp)}, vz.exploration_markdown(exp), notices,
                 values={"click_image": vz.click_image(exp.image, exp.query, display), "exploration": exp})
