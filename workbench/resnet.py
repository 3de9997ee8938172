"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) for the paper-scale
recipes of two papers whose experiments use them: Cross-Iteration BN (ImageNet classification with ResNet-18,
every BatchNorm replaced by CBN through :func:`workbench.cbn.convert_to_cbn`) and Disentangled Non-Local
(Cityscapes segmentation on a dilated ResNet-101, output stride 8).

* stem: 7x7 conv stride 2, BN, ReLU, 3x3 max pool stride 2; four stages of basic blocks (ResNet-18/34) or
  bottlenecks (ResNet-50/101, stride on the 3x3 conv, "ResNet v1.5"); a 1x1 conv + BN projection shortcut where
  the shape changes; global average pooling and a linear head (``num_classes=0``: pooled features);
* ``dilate=(False, True, True)`` replaces the strides of stages 2-4 that are marked by dilation (output stride 8,
  as the dilated FCN backbones of DeepLab / DNL);
* module names follow the usual ``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``downsample.0/1``, ``fc`` layout, so
  ImageNet checkpoints in that layout load with ``load_state_dict``;
* initialisation: Kaiming-normal (fan-out) convs, BN weight 1 / bias 0.

Same API as the other backbones where it applies: ``num_features``, ``forward_features`` ((B, C, H/s, W/s) map),
``forward_head``, ``forward``; names live in :data:`CONFIGS` and :func:`workbench.models.create_model` finds them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ResNetConfig", "ResNet", "BasicBlock", "Bottleneck", "CONFIGS", "build"]


@dataclass
class ResNetConfig:
    block: str = "basic"                      # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101)
    layers: tuple = (2, 2, 2, 2)
    num_classes: int = 1000
    in_chans: int = 3
    width: int = 64                           # channels of the stem and of the first stage's 3x3 convs
    dilate: tuple = (False, False, False)     # stages 2, 3, 4: dilation instead of stride

    def __post_init__(self):
        self.layers = tuple(int(n) for n in self.layers)
        self.dilate = tuple(bool(d) for d in self.dilate)
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if len(self.layers) != 4 or min(self.layers) < 1 or len(self.dilate) != 3:
            raise ValueError(f"a ResNet has 4 stages of >= 1 block and 3 dilation flags; got {self.layers}, "
                             f"{self.dilate}")
        if self.num_classes < 0 or self.width < 1:
            raise ValueError(f"bad ResNetConfig sizes: {self}")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig | None = None, **kw):
        super().__init__()
        cfg = replace(cfg, **kw) if cfg is not None else ResNetConfig(**kw)
        self.cfg = cfg
        block = BasicBlock if cfg.block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(cfg.in_chans, cfg.width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, dilation, stride_total = cfg.width, 1, 4
        for i, n in enumerate(cfg.layers):
            planes = cfg.width * 2 ** i
            stride = 1 if i == 0 else 2
            prev_dilation = dilation
            if i > 0 and cfg.dilate[i - 1]:
                dilation, stride = dilation * stride, 1
            stride_total *= stride
            downsample = None
            if stride != 1 or cin != planes * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, prev_dilation, downsample)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, dilation) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features, self.output_stride = cin, stride_total
        self.num_classes = cfg.num_classes
        self.fc = nn.Linear(cin, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_features, H/output_stride, W/output_stride). No Python checks on the input, so
        ``torch.fx`` can trace the network (:func:`workbench.cbn.convert_to_cbn` reads its conv -> BN pairs)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


CONFIGS: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig("basic", (2, 2, 2, 2)),
    "resnet34": ResNetConfig("basic", (3, 4, 6, 3)),
    "resnet50": ResNetConfig("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetConfig("bottleneck", (3, 4, 23, 3)),
}


def build(cfg: ResNetConfig, **overrides) -> ResNet:
    """A model from a config (``overrides`` replace config fields, e.g. ``num_classes``, ``dilate``)."""
    overrides.pop("img_size", None)   # convolutional: any input size; accepted so recipes can pass it uniformly
    valid = {f.name for f in fields(ResNetConfig)}
    bad = set(overrides) - valid
    if bad:
        raise ValueError(f"unknown override(s) {sorted(bad)}; valid: {sorted(valid)}")
    return ResNet(replace(cfg, **overrides))
