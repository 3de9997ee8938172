"""MoBY demo: the committed self-supervised encoder's embeddings of a gallery — a 2-D map, nearest neighbours of a
point or of an uploaded image — and the two augmented views it was trained on.

Used by the "MoBY" app tab, the explorers of notebook 03 and the tests. The encoder comes from
``workbench train moby-demo --save-demo`` (Swin V2 micro, 64 px shapes; no labels were used in training).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench import checkpoints
from workbench import moby as mb
from workbench.data import natural, shapes
from workbench.data.transforms import denormalize, images_to_tensor
from workbench.demos.common import Panel, cached, check_choice, check_int, read_image
from workbench.studies.moby import PretrainConfig, TwoViewShapes

CHECKPOINT = "moby_swinv2_shapes"
COMMAND = "workbench train moby-demo --save-demo"
GALLERIES = ("shapes", "digits")
PROJECTIONS = ("pca", "tsne")
N = 300
MAX_K = 14


def embed_images(encoder: nn.Module, images) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of uint8 (N, H, W, 3) arrays or float (N, 3, H, W) tensors."""
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        x = images
    else:
        a = np.asarray(images)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"expected images (N, H, W, 3), got shape {a.shape}")
        x = images_to_tensor(a)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("the images contain NaN or infinite values")
    size = getattr(encoder, "img_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(mb.extract_features(encoder, x, normalize=mb.normalize_batch), dim=1)


def nearest_neighbours(embeddings: torch.Tensor, query: torch.Tensor, k: int = 8,
                       exclude: int | None = None) -> tuple[list[int], list[float]]:
    """Indices and cosine similarities of the ``k`` nearest embeddings to ``query`` (D,), best first."""
    if embeddings.ndim != 2 or query.ndim != 1 or query.shape[0] != embeddings.shape[1]:
        raise ValueError(f"embeddings (N, D) and query (D,) expected, got {tuple(embeddings.shape)} and "
                         f"{tuple(query.shape)}")
    if not 1 <= int(k) <= 100:
        raise ValueError(f"k must be between 1 and 100, got {k}")
    sim = F.normalize(embeddings.float(), dim=1) @ F.normalize(query.float(), dim=0)
    if exclude is not None:
        sim = sim.clone()
        sim[int(exclude)] = -float("inf")
    k = min(int(k), embeddings.shape[0] - (exclude is not None))
    s, idx = sim.topk(k)
    return idx.tolist(), s.tolist()


def project_2d(embeddings: torch.Tensor, method: str = "pca", seed: int = 0, perplexity: float = 30.0):
    """A 2-D map of embeddings: ``"pca"`` (torch SVD, sign-fixed) or ``"tsne"`` (scikit-learn). numpy (N, 2)."""
    import numpy as np
    x = embeddings.double()
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError("need at least 3 embeddings (N, D) for a 2-D map")
    if method == "pca":
        xc = x - x.mean(0)
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        comp = vh[:2]
        # fix the sign so the map is deterministic: the largest loading of each component is positive
        signs = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True))).squeeze(1)
        comp = comp * signs[:, None]
        return (xc @ comp.T).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE
        perp = float(min(perplexity, (x.shape[0] - 1) / 3))
        tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, max_iter=500)
        return tsne.fit_transform(x.float().numpy()).astype(np.float64)
    raise ValueError(f"unknown projection {method!r}: use 'pca' or 'tsne'")


@cached
def encoder():
    """``(encoder in eval mode, info)``: the MoBY-pretrained backbone (pooled features) and the numbers measured
    at training time (kNN against a random encoder, linear probe, the curve)."""
    ck = checkpoints.load_demo(CHECKPOINT, COMMAND)
    cfg = (ck.meta or {}).get("config") or {}
    try:
        enc = mb.create_encoder(str(cfg.get("backbone", "swinv2_micro_window4_64")), 0.0, **(cfg.get("overrides") or {}))
    except (TypeError, ValueError) as e:
        raise checkpoints.CheckpointError(f"the checkpoint records a backbone that cannot be built: {e}") from None
    checkpoints.load_into(enc, ck, strict=True)
    info = {k: ck.extra.get(k) for k in ("knn", "knn_random_init", "linear", "curve", "eval")}
    return enc.float().eval(), info


def image_size() -> int:
    enc, _ = encoder()
    s = enc.img_size
    return int(s[0] if isinstance(s, (tuple, list)) else s)


@cached
def gallery(dataset: str = "shapes"):
    """A labelled gallery to embed: ``(uint8 images (N, S, S, 3), labels (N,), class names)`` (unseen data)."""
    check_choice("gallery", dataset, GALLERIES)
    size = image_size()
    if dataset == "shapes":
        d = shapes.load(n=N, size=size, seed=7)
        return d.images, d.labels.astype(np.int64), list(shapes.CLASSES)
    x, y = natural.digits("test", size=size, rgb=True)
    imgs = (x[:N].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return imgs, y[:N].numpy().astype(np.int64), [str(i) for i in range(10)]


@cached
def index(dataset: str = "shapes") -> dict:
    """``{"images", "labels", "names", "emb"}`` of a gallery under the demo encoder."""
    enc, _ = encoder()
    images, labels, names = gallery(dataset)
    with torch.no_grad():
        emb = embed_images(enc, images)
    return {"images": images, "labels": labels, "names": names, "emb": emb}


@cached
def projection(dataset: str = "shapes", method: str = "pca"):
    """2-D map (numpy (N, 2)) of a gallery's embeddings."""
    check_choice("projection", method, PROJECTIONS)
    return project_2d(index(dataset)["emb"], method)


def neighbours(dataset: str = "shapes", *, point: int | None = None, image=None, k: int = 8) -> dict:
    """Nearest gallery neighbours of a gallery point or of an image: ``{"query", "indices", "sims", "labels",
    "names", "notices"}`` (the query point itself excluded)."""
    idx = index(dataset)
    k = check_int("number of neighbours", k, 1, MAX_K)
    notices = []
    if (point is None) == (image is None):
        raise ValueError("give either a point number or an image")
    if point is not None:
        i = check_int("point number", point, 0, len(idx["labels"]) - 1)
        q, query_img, exclude = idx["emb"][i], idx["images"][i], i
    else:
        arr, notices = read_image(image, size=image_size())
        enc, _ = encoder()
        q = embed_images(enc, arr[None])[0]
        query_img, exclude = arr, None
    ids, sims = nearest_neighbours(idx["emb"], q, k=k, exclude=exclude)
    return {"query": query_img, "indices": ids, "sims": sims, "labels": [int(idx["labels"][j]) for j in ids],
            "names": idx["names"], "notices": notices}


def neighbour_text(res: dict) -> str:
    names = res["names"]
    return "nearest: " + ", ".join(f"#{i} {names[c]} ({s:.2f})" for i, c, s in zip(res["indices"], res["labels"], res["sims"]))


def map_panel(dataset: str = "shapes", method: str = "pca", point: int = 0, k: int = 8) -> Panel:
    """The embedding map with a point and its neighbours ringed, the neighbour images, and the encoder's numbers."""
    from workbench.viz import moby as vm

    idx = index(dataset)
    res = neighbours(dataset, point=point, k=k)
    xy = projection(dataset, method)
    p = int(point)
    fig_map = vm.embedding_map(xy, idx["labels"], idx["names"], highlight=[p, *res["indices"]],
                               title=f"{dataset}: {method.upper()} of the MoBY embeddings<br>point #{p} and its "
                                     f"{len(res['indices'])} nearest neighbours ringed")
    fig_nn = vm.neighbours_figure(res["query"], [idx["images"][j] for j in res["indices"]], res["sims"], res["labels"],
                                  res["names"], indices=res["indices"],
                                  query_title=f"#{p} · {res['names'][int(idx['labels'][p])]}")
    return Panel({"map": fig_map, "neighbours": fig_nn}, neighbour_text(res) + ". " + summary(), values=res)


def upload_panel(dataset: str, image, k: int = 8) -> Panel:
    from workbench.viz import moby as vm

    if image is None or (isinstance(image, str) and image == ""):
        raise ValueError("Please choose or upload an image first.")
    idx = index(dataset)
    res = neighbours(dataset, image=image, k=k)
    fig = vm.neighbours_figure(res["query"], [idx["images"][j] for j in res["indices"]], res["sims"], res["labels"],
                               res["names"], indices=res["indices"], query_title="your image")
    return Panel({"neighbours": fig}, neighbour_text(res), res["notices"], values=res)


def summary() -> str:
    _, info = encoder()
    if info.get("knn") is None:
        return ""
    return (f"The encoder's weighted kNN top-1 on unseen shapes is **{info['knn']:.1f}%** against "
            f"{info['knn_random_init']:.1f}% for a randomly initialised encoder of the same architecture "
            f"(linear probe {info['linear']:.1f}%; chance 10%).")


def view_sources() -> list[str]:
    return [f"shapes #{i}" for i in range(4)] + list(natural.photo_names())


def views_panel(source: str = "shapes #0", seed: int = 0) -> Panel:
    """Two augmented views of a gallery shape or a bundled photo. Shapes get the demo's training views (object
    on a new background and in a new colour, then the BYOL augmentations); photos the paper's BYOL views."""
    from workbench.viz import moby as vm

    seed = check_int("seed", seed, 0, 10**9)
    if source.startswith("shapes #"):
        i = check_int("shapes index", source.split("#", 1)[1], 0, 3)
        ds = _views_set(image_size())
        v1, v2 = (denormalize(v).clamp(0, 1) for v in ds.sample(i, torch.Generator().manual_seed(seed)))
        img = ds.images[i].permute(1, 2, 0).numpy()
        text = "the demo's training views: the object on a new background and in a new colour, then crop, flip, " \
               "colour jitter and grayscale (blur and solarisation are off at 64 px)"
    elif source in natural.photo_names():
        img = np.array(natural.load_photo(source))
        v1, v2 = mb.two_views(img, size=96, seed=seed)
        text = "the paper's BYOL views: view 1 always blurred; view 2 blurred with p 0.1 and solarised with p 0.2"
    else:
        raise ValueError(f"unknown image source {source!r}; choose one of {view_sources()[:3]} ...")
    return Panel({"views": vm.two_views_figure(img, v1, v2, seed=seed)}, text)


@cached
def _views_set(size: int):
    return TwoViewShapes(PretrainConfig(n_images=16, img_size=size))
