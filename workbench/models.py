"""The one backbone registry: ``create_model(name, **overrides)`` for every Swin V2 / Swin V1 / ViT / ResNet config.

Each backbone module holds its named configurations (``swin_v2.CONFIGS``, ``vit.CONFIGS``, ``resnet.CONFIGS``: config
dataclasses, passed whole) and a ``build(cfg, **overrides)``; this module joins them, so the methods
(SimMIM, MoBY, iCAR) and the studies name a backbone without knowing which module defines it, and the
backbone modules never import each other.

    >>> from workbench.models import create_model
    >>> m = create_model("swinv2_tiny_window8_256", num_classes=0)        # pooled features
    >>> m = create_model("swin_tiny_patch4_window7_224")                   # Swin V1
    >>> m = create_model("swinv2_lite_window4_64", version="v1", img_size=32)
    >>> m = create_model("resnet101", num_classes=0, dilate=(False, True, True))   # output stride 8
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from workbench import resnet, swin_v2, vit

FAMILIES = {"swin": (swin_v2.CONFIGS, swin_v2.build), "vit": (vit.CONFIGS, vit.build),
            "resnet": (resnet.CONFIGS, resnet.build)}


def model_names(family: str | None = None) -> list[str]:
    """Every registered name (or those of one family: ``swin``, ``vit``, ``resnet``)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return sorted(n for f, (cfgs, _) in FAMILIES.items() if family in (None, f) for n in cfgs)


def family_of(name: str) -> str:
    for fam, (cfgs, _) in FAMILIES.items():
        if name in cfgs:
            return fam
    raise ValueError(f"unknown model {name!r}; choose one of {model_names()}")


def model_config(name: str, **overrides):
    """The config dataclass of ``name`` with ``overrides`` applied (not yet a model)."""
    cfgs, _ = FAMILIES[family_of(name)]
    return replace(cfgs[name], **overrides) if overrides else cfgs[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a backbone by name; ``overrides`` are config fields (``img_size``, ``num_classes`` — 0 gives
    pooled features —, ``drop_path_rate``, ``window_size``, ``mask_token``, ...; Swin also ``version``)."""
    cfgs, build = FAMILIES[family_of(name)]
    return build(cfgs[name], **overrides)
