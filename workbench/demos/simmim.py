"""SimMIM demo: mask an image, let the committed pre-trained model fill it in, compare with classical inpainting.

Used by the "SimMIM" app tab, the explorer of notebook 02 and the tests. Models: ``simmim_swinv2_lite`` (Swin V2
lite, 64 px, trained by ``workbench train simmim-demo --save-demo``) and, when committed, ``simmim_vit_lite``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from workbench import simmim as sm
from workbench.checkpoints import demo_path, load_demo, load_into
from workbench.data import shapes
from workbench.data.natural import load_photo, photo_names
from workbench.data.transforms import to_tensor
from workbench.demos.common import Panel, cached, check_choice, check_float, check_int, read_image
from workbench.studies.simmim import biharmonic_inpaint, masked_l1, mean_fill_inpaint

SIZE = 64
MODELS = {  # label -> (checkpoint, backbone, command)
    "Swin V2 lite (SimMIM)": ("simmim_swinv2_lite", "swinv2_lite_window4_64", "workbench train simmim-demo --save-demo"),
    "ViT lite (SimMIM)": ("simmim_vit_lite", "vit_lite_patch8_64",
                          "workbench train simmim-demo --model vit_lite_patch8_64 --save-demo"),
}
MASK_PATCHES = (4, 8, 16, 32)
UPLOAD = "upload"


def available_models() -> list[str]:
    """The labels of the models whose checkpoints are committed."""
    return [label for label, (ck, _, _) in MODELS.items() if demo_path(ck).exists()]


@cached
def model(label: str = "Swin V2 lite (SimMIM)"):
    """``(SimMIM model in eval mode, info)``; ``info`` holds the inpainting numbers measured at training time."""
    check_choice("model", label, list(MODELS))
    ck_name, backbone, command = MODELS[label]
    ck = load_demo(ck_name, command)
    cfg = ck.meta.get("config", {}) or {}
    net = sm.build_simmim(cfg.get("model", backbone), sm.SimMIMConfig(loss=cfg.get("loss", "l1"),
                                                                        head=cfg.get("head", "linear")))
    load_into(net, ck)
    return net.eval(), {"inpainting": ck.extra.get("inpainting"), "test_set": ck.extra.get("test_set"),
                        "curve": ck.extra.get("curve", [])}


def mask_patches(label: str) -> list[int]:
    """Mask patch sizes the model can use (multiples of its patch size)."""
    net, _ = model(label)
    return [p for p in MASK_PATCHES if p % net.patch_size == 0]


def sources() -> list[str]:
    return ["shapes scene"] + [f"photo: {n}" for n in photo_names()] + [f"shapes: {c}" for c in shapes.CLASSES]


def image(source: str, seed: int = 0, upload=None) -> tuple[np.ndarray, list[str]]:
    """(uint8 (64, 64, 3) image, notices) for a source: a shapes scene (1-2 objects, like the test set), a
    bundled photo, one rendered shape, or an upload."""
    seed = check_int("seed", seed, 0, 100_000)
    if source == UPLOAD:
        if upload is None:
            raise ValueError("Choose an image file to upload (or pick a bundled photo or a shapes scene).")
        return read_image(upload, size=SIZE)
    if source == "shapes scene":
        d = shapes.generate(n=1, size=SIZE, seed=10_000 + seed, min_objects=1, max_objects=2)
        return np.ascontiguousarray(d.images[0]), []
    kind, _, name = str(source).partition(":")
    name = name.strip()
    if kind == "photo":
        if name not in photo_names():
            raise ValueError(f"unknown photo {name!r}; pick one of the listed photos or {UPLOAD!r}")
        return read_image(np.array(load_photo(name)), size=SIZE)[0], []
    if kind == "shapes":
        check_choice("shape", name, shapes.CLASSES)
        return shapes.render(name, color="red", size="large", background="striped", seed=seed, image_size=SIZE)["image"], []
    raise ValueError(f"unknown image source {source!r}; choose one of {sources()[:4]} ... or {UPLOAD!r}")


def reconstruct(img: np.ndarray, strategy: str = "random", mask_ratio: float = 0.6, mask_patch_size: int = 16,
                seed: int = 0, label: str = "Swin V2 lite (SimMIM)") -> sm.Reconstruction:
    """One reconstruction; the mask is drawn by ``strategy`` with the model's patch size."""
    net, _ = model(label)
    strategy = check_choice("masking strategy", strategy, sm.STRATEGIES)
    mask_ratio = check_float("mask ratio", mask_ratio, 0.0, 1.0, open_lo=True, open_hi=True)
    allowed = mask_patches(label)
    mask_patch_size = check_int("mask patch size", mask_patch_size, min(allowed), max(allowed))
    if mask_patch_size not in allowed:
        raise ValueError(f"{label} has {net.patch_size} px patches: the mask patch must be one of {allowed}")
    seed = check_int("seed", seed, 0, 2**31 - 1)
    mask = sm.make_mask(strategy, SIZE, mask_patch_size, net.patch_size, mask_ratio, seed=seed)
    return sm.reconstruct(net, img, mask)


def classical(img: np.ndarray, token_mask: np.ndarray, patch: int) -> dict[str, float]:
    """Masked-pixel L1 ([0, 1] pixel units) of biharmonic inpainting and of the mean visible colour."""
    x = to_tensor(img)[None]
    pm = sm.upsample_mask(torch.as_tensor(token_mask)[None].float(), patch)
    return {"biharmonic": float(masked_l1(biharmonic_inpaint(x, pm), x, pm)[0]),
            "mean_fill": float(masked_l1(mean_fill_inpaint(x, pm), x, pm)[0])}


def panel(source: str = "shapes scene", strategy: str = "random", mask_ratio: float = 0.6, mask_patch_size: int = 16,
          seed: int = 0, label: str = "Swin V2 lite (SimMIM)", upload=None) -> Panel:
    """The app tab's / explorer's view: reconstruction strip, per-patch error, and a summary comparing the
    model's masked-pixel error on this image with biharmonic inpainting, plus the test-set numbers."""
    from workbench.viz import simmim as vz

    img, notices = image(source, seed, upload)
    rec = reconstruct(img, strategy, mask_ratio, mask_patch_size, seed, label)
    net, info = model(label)
    pm = sm.upsample_mask(torch.as_tensor(rec.token_mask)[None].float(), net.patch_size)[0].numpy().astype(bool)
    l1 = float(np.abs(rec.reconstruction - rec.original)[pm].mean()) if pm.any() else float("nan")
    # the classical inpainters start from visible pixels: with none (every patch masked) they have no answer
    nan = {"biharmonic": float("nan"), "mean_fill": float("nan")}
    cl = classical(img, rec.token_mask, net.patch_size) if pm.any() and not pm.all() else nan
    d = "∞ (every pixel masked)" if math.isinf(rec.avg_dist) else f"{rec.avg_dist:.1f} px"
    if pm.all():
        classic = "biharmonic and mean colour have no visible pixel to start from"
    else:
        classic = f"biharmonic {cl['biharmonic']:.3f}, mean colour {cl['mean_fill']:.3f}"
    text = (f"**{label}** · masked {int(rec.token_mask.sum())}/{rec.token_mask.size} tokens · **AvgDist** {d} · "
            f"masked-pixel error (L1, 0–1 pixel units): **SimMIM {l1:.3f}**, {classic}.")
    test = (info.get("inpainting") or {}).get("shapes")
    if test:
        text += (f" On 200 unseen shapes scenes (ratio 0.6, 16 px patches) the model's error is "
                 f"**{test['ratio_to_biharmonic']:.2f}×** biharmonic's ({test['simmim']:.3f} vs {test['biharmonic']:.3f}).")
    return Panel({"reconstruction": vz.reconstruction_figure(rec), "error": vz.error_heatmap_figure(rec)}, text,
                 notices, values={"rec": rec, "l1": l1, **cl})
