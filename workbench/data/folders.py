"""A user's own images: one folder per class (``root/<class>/<image>``), like torchvision's ImageFolder; and
segmentation data as ``root/images`` + ``root/masks`` (:class:`SegmentationFolder`)."""
from __future__ import annotations

from pathlib import Path

from .images import prepare_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFolder:
    """Images under ``root/<class>/``; classes sorted by name. Items are ``(float (3,H,W) in [0,1], class index)``.

    ``size`` resizes every image (so they batch); ``transform`` is applied after. Corrupt files raise a
    ``ValueError`` naming the file when they are read; an empty or missing root raises at construction.
    """

    def __init__(self, root, transform=None, size: int | None = None, extensions=IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder not found: {self.root}")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders (expected root/<class>/<image files>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [
            (p, self.class_to_idx[c])
            for c in self.classes
            for p in sorted((self.root / c).rglob("*"))
            if p.is_file() and p.suffix.lower() in extensions
        ]
        if not self.samples:
            raise ValueError(f"no image files ({', '.join(extensions)}) found under {self.root}")
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from .transforms import to_tensor

        path, label = self.samples[i]
        try:
            arr, _ = prepare_image(path, size=self.size)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        x = to_tensor(arr)
        if self.transform is not None:
            x = self.transform(x)
        return x, label


class SegmentationFolder:
    """A user's segmentation data: ``root/images/<name>.<ext>`` with ``root/masks/<name>.png`` (same stem).

    A mask is a single-channel image of class ids ``0 .. num_classes - 1``; ``ignore_index`` (255) marks pixels
    without a label (the Cityscapes ``*_labelTrainIds.png`` files have exactly this form). Items are
    ``(float (3,H,W) in [0,1], int64 (H,W) mask)``, passed through ``transform(image, mask)`` when given. Images
    keep their size up to ``max_side`` pixels (Cityscapes' 2048 x 1024 stays whole). An image without its mask, a
    mask with another size than its image or a class id outside the range raises ``ValueError`` naming the file.
    """

    def __init__(self, root, num_classes: int, transform=None, ignore_index: int = 255, max_side: int = 4096,
                 extensions=IMAGE_EXTENSIONS):
        self.root = Path(root)
        images, masks = self.root / "images", self.root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise ValueError(f"{self.root} must hold images/ and masks/ (root/images/<name>.jpg with "
                             "root/masks/<name>.png)")
        self.samples = []
        for p in sorted(images.rglob("*")):
            if p.is_file() and p.suffix.lower() in extensions:
                m = masks / p.relative_to(images).with_suffix(".png")
                if not m.is_file():
                    raise ValueError(f"{p}: no mask {m}")
                self.samples.append((p, m))
        if not self.samples:
            raise ValueError(f"no image files ({', '.join(extensions)}) found under {images}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes, self.ignore_index, self.max_side = int(num_classes), int(ignore_index), int(max_side)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, path):
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{path}: a mask must be a single-channel image of class ids, got mode {im.mode}")
            a = np.asarray(im).astype(np.int64)
        bad = (a != self.ignore_index) & ((a < 0) | (a >= self.num_classes))
        if bad.any():
            raise ValueError(f"{path}: class id {int(a[bad][0])} outside 0..{self.num_classes - 1} "
                             f"(and not the ignore index {self.ignore_index})")
        return a

    def __getitem__(self, i: int):
        import torch

        from .transforms import to_tensor

        path, mpath = self.samples[i]
        try:
            arr, _ = prepare_image(path, max_side=self.max_side)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        mask = self.read_mask(mpath)
        if mask.shape != arr.shape[:2]:
            raise ValueError(f"{mpath}: mask {mask.shape[1]}x{mask.shape[0]} differs from its image "
                             f"{arr.shape[1]}x{arr.shape[0]}")
        x = to_tensor(arr)
        y = torch.from_numpy(mask)
        if self.transform is not None:
            x, y = self.transform(x, y)
        return x, y
