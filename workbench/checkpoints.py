"""Checkpoints with metadata, loaded safely.

A checkpoint is a ``torch.save``'d dict ``{"format": "vision-workbench/1", "state_dict": ..., "meta": ...,
"extra": ...}``. ``meta`` records the configuration, the command that produced it, the git revision, the
data seed, the creation time and library versions. Loading always uses ``torch.load(weights_only=True)``,
so a checkpoint can never run code. Plain state dicts (e.g. official checkpoints) and ``.safetensors``
files load too.

Demo checkpoints live in ``workbench/assets/checkpoints/<name>.pt``; each records the command that
regenerates it (also listed in that folder's README).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "vision-workbench/1"
DEMO_DIR = Path(__file__).resolve().parent / "assets" / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, not a checkpoint, or does not fit the model."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def _jsonable(x):
    """Metadata must survive weights_only loading: keep it to JSON types."""
    return json.loads(json.dumps(x, default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o)))


def save_checkpoint(path, model_or_state_dict, *, config: dict | None = None, command: str | None = None,
                    data_seed: int | None = None, extra: dict | None = None, half: bool = False) -> Path:
    """Write a checkpoint atomically. ``half=True`` stores floating tensors as float16 (demo checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in sd.items()}
    import numpy

    meta = {
        "config": _jsonable(config or {}),
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "git_revision": git_revision(),
        "data_seed": data_seed,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__.split("+")[0], "numpy": numpy.__version__},
        "dtype": "float16" if half else "float32",
    }
    blob = {"format": FORMAT, "state_dict": sd, "meta": meta, "extra": extra or {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``; raise :class:`CheckpointError` with a clear message on any problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a checkpoint file, got a folder: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return Checkpoint(load_file(str(path), device=str(map_location)), {}, {}, path)
        except Exception as e:
            raise CheckpointError(f"could not read safetensors file {path.name}: {e}") from None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"{path.name} contains objects other than tensors and plain data; refusing "
                                  "to unpickle it (weights_only=True)") from None
        raise CheckpointError(f"{path.name} is not a readable checkpoint (truncated or corrupt?): {msg}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return Checkpoint(obj["state_dict"], obj.get("meta", {}), obj.get("extra", {}), path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):  # common wrappers (official checkpoints use "model")
            if key in obj and isinstance(obj[key], dict):
                return Checkpoint(obj[key], {k: v for k, v in obj.items() if k != key and not isinstance(v, dict)},
                                  {}, path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return Checkpoint(obj, {}, {}, path)
    raise CheckpointError(f"{path.name} does not contain a state dict")


def load_into(model: torch.nn.Module, source, strict: bool = True) -> Checkpoint:
    """Load a checkpoint (path or :class:`Checkpoint`) into ``model``; dtypes are cast to the model's.

    Mismatched keys or shapes raise :class:`CheckpointError` listing them.
    """
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    own = model.state_dict()
    sd = {}
    for k, v in ckpt.state_dict.items():
        if k in own and v.is_floating_point() and own[k].is_floating_point():
            v = v.to(own[k].dtype)
        sd[k] = v
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    name = ckpt.path.name if ckpt.path else "checkpoint"
    if shapes:
        missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    else:
        # missing / unexpected keys are those left after the modules' own load hooks (e.g. CBN fills the
        # `iteration` counter that older checkpoints lack); on a mismatch the model is restored unchanged
        backup = {k: v.detach().clone() for k, v in own.items()}
        result = model.load_state_dict(sd, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if strict and (missing or unexpected):
            model.load_state_dict(backup, strict=False)
    if shapes or (strict and (missing or unexpected)):
        parts = ["shape mismatch: " + "; ".join(shapes[:8]) + (" ..." if len(shapes) > 8 else "")] if shapes else []
        if strict and missing:
            parts.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        if strict and unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:8])
                         + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{name} does not fit {type(model).__name__}: " + " | ".join(parts))
    return ckpt


def demo_path(name: str) -> Path:
    """Path of the committed demo checkpoint ``name`` (``workbench/assets/checkpoints/<name>.pt``)."""
    return DEMO_DIR / (name if name.endswith((".pt", ".safetensors")) else f"{name}.pt")


def load_demo(name: str, command: str | None = None) -> Checkpoint:
    """Load a committed demo checkpoint, or explain how to regenerate it."""
    path = demo_path(name)
    if not path.exists():
        how = f" Regenerate it with: {command}" if command else ""
        raise CheckpointError(f"demo checkpoint '{name}' is missing ({path}).{how}")
    return load_checkpoint(path)


def demo_index() -> list[dict[str, Any]]:
    """Every committed demo checkpoint with its size and the command recorded in its metadata."""
    rows = []
    for p in sorted(DEMO_DIR.glob("*.pt")):
        try:
            meta = load_checkpoint(p).meta
        except CheckpointError as e:
            meta = {"command": f"unreadable: {e}"}
        rows.append({"name": p.stem, "file": p.name, "megabytes": round(p.stat().st_size / 2**20, 2),
                     "command": meta.get("command"), "created": meta.get("created"),
                     "git_revision": meta.get("git_revision")})
    return rows


def write_demo_readme() -> Path:
    """(Re)write ``workbench/assets/checkpoints/README.md`` from the checkpoints' own metadata."""
    lines = ["# Demo checkpoints", "",
             "Small models the apps and notebooks use, trained by the project's own commands on data that is",
             "generated or shipped by installed packages. Each file records the command that made it; rerun it",
             "to regenerate the file. Listed by `workbench checkpoints`.", "",
             "| file | MB | command | created |", "|---|---|---|---|"]
    for r in demo_index():
        lines.append(f"| `{r['file']}` | {r['megabytes']} | `{r['command']}` | {r['created']} |")
    path = DEMO_DIR / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
