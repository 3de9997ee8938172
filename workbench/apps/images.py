"""Image outputs handed to gradio as files written by write-then-rename (see :func:`image_file`).

Its own module so that both ``apps.common`` and the upload component (``apps.upload``) can use it.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

IMAGE_FILES_KEPT = 512  # image_file() keeps this many newest files; older ones go once IMAGE_MIN_AGE_S old
IMAGE_MIN_AGE_S = 60.0
_image_lock = threading.Lock()


def image_dir() -> Path:
    """This process's folder of images handed to gradio (under the system temp folder)."""
    d = Path(tempfile.gettempdir()) / f"workbench-images-{os.getpid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:  # removed meanwhile by another process's pruning
        return 0


def image_file(arr) -> str:
    """An image output as a PNG file written atomically, named by its content.

    gradio 6 writes a numpy image output straight over a cache file named by the image's hash; two sessions that
    produce the same image at once (the same scene and query) then truncate the file while the other one's answer
    is being sent ("peer closed connection without sending complete message body" in the load test). A path
    output is copied into gradio's cache by a write-then-rename, which is safe, so the tab returns this path."""
    import hashlib

    import numpy as np
    from PIL import Image

    a = np.ascontiguousarray(np.asarray(arr, dtype=np.uint8))
    key = hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:32]
    d = image_dir()
    path = d / f"{key}.png"
    if path.exists():
        try:
            os.utime(path)          # handed out again: newest, so pruning keeps it
            return str(path)
        except OSError:             # pruned meanwhile: write it again
            pass
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(a).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with _image_lock:
        files = sorted(d.glob("*.png"), key=_mtime)
        cutoff = time.time_ns() - int(IMAGE_MIN_AGE_S * 1e9)
        for old in files[:max(0, len(files) - IMAGE_FILES_KEPT)]:
            if old != path and _mtime(old) < cutoff:
                old.unlink(missing_ok=True)
    return str(path)
