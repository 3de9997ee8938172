"""A user's own images: one folder per class (``root/<class>/<image>``), like torchvision's ImageFolder."""
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
