"""Look inside a model while it runs: one context manager for every module of the workbench.

    with inspect.capture(model, "*.attn.logits") as cap:
        model(x)
    cap["layers.0.blocks.1.attn.logits"]          # the last value emitted under that name
    cap.all("layers.0.blocks.1.attn.logits")      # every value, in order (keep="all")

Modules announce what they can show with :func:`emit` (``inspect.emit(self, "logits", tensor)``) and may
ask :func:`wants` first when producing the value costs something (e.g. leaving a fused attention kernel
for the explicit softmax). A value is recorded under ``"<qualified module name>.<key>"``, the qualified
name being the module's name inside the captured model (``model.named_modules()``), so two models never
mix.

Nothing is stored on the model: the active captures live in a :class:`contextvars.ContextVar`, which is
private to the thread (and asyncio task) that opened them. Several requests can therefore run one cached
model at once — each sees only what its own ``with`` block captured — and outside a ``with`` block
``emit``/``wants`` cost one context-variable lookup.

One limit follows from the context variable: a ``with capture(...)`` block must open and close in the same
context. A generator that yields from inside the block and is resumed by another thread (Gradio streams a
generator's updates this way) closes it in a different context, which ``contextvars`` refuses. Run each
chunk of work with its own ``with`` block (or inside one ``contextvars.copy_context().run``), as
``workbench.demos.cbn`` does for its live training.
"""
from __future__ import annotations

import contextlib
import contextvars
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any

_ACTIVE: contextvars.ContextVar[tuple[Capture, ...]] = contextvars.ContextVar("workbench_inspect", default=())


class Capture:
    """What one ``with capture(...)`` block records (see the module docstring)."""

    def __init__(self, model, patterns: tuple[str, ...] = ("*",), keep: str = "last", detach: bool = True,
                 options: dict | None = None):
        if keep not in ("last", "all"):
            raise ValueError(f"keep must be 'last' or 'all', got {keep!r}")
        self.options = dict(options or {})
        self.patterns = tuple(patterns) or ("*",)
        self.keep, self.detach = keep, detach
        self._names = {id(m): n for n, m in model.named_modules()}
        self._values: dict[str, list[Any]] = {}
        self._state: dict[int, dict] = {}

    # -- recording ---------------------------------------------------------------------------------
    def name_of(self, module) -> str | None:
        return self._names.get(id(module))

    def wants(self, module, key: str) -> bool:
        name = self._names.get(id(module))
        if name is None:
            return False
        full = f"{name}.{key}" if name else key
        return any(fnmatch.fnmatchcase(full, p) for p in self.patterns)

    def put(self, module, key: str, value) -> None:
        name = self._names[id(module)]
        full = f"{name}.{key}" if name else key
        if self.detach and hasattr(value, "detach"):
            value = value.detach()
        if self.keep == "last":
            self._values[full] = [value]
        else:
            self._values.setdefault(full, []).append(value)

    def state(self, module) -> dict:
        """Scratch space for ``module`` that lives as long as this capture (e.g. past inputs kept by a
        module that reports statistics over several steps)."""
        return self._state.setdefault(id(module), {})

    # -- reading -----------------------------------------------------------------------------------
    def __getitem__(self, name: str):
        if name not in self._values:
            raise KeyError(f"nothing was captured under {name!r}; captured: {sorted(self._values)[:12]}")
        return self._values[name][-1]

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def all(self, name: str) -> list:
        return list(self._values.get(name, []))

    def keys(self) -> list[str]:
        return list(self._values)

    def items(self, pattern: str = "*") -> list[tuple[str, Any]]:
        """``(name, last value)`` for every captured name matching ``pattern``, in capture order."""
        return [(k, v[-1]) for k, v in self._values.items() if fnmatch.fnmatchcase(k, pattern)]

    def select(self, pattern: str) -> list:
        """The last values of every name matching ``pattern``, in capture order."""
        return [v for _, v in self.items(pattern)]


@contextlib.contextmanager
def capture(model, *patterns: str, keep: str = "last", detach: bool = True, **options) -> Iterator[Capture]:
    """Record the values that ``model``'s modules emit under names matching ``patterns`` (fnmatch;
    default everything) while the block runs. ``keep="all"`` keeps every emitted value (e.g. one per
    training step) instead of the last one. ``options`` are read by the modules (:func:`option`), e.g.
    ``queries=[...]`` to keep only some rows of an attention map."""
    cap = Capture(model, patterns, keep, detach, options)
    token = _ACTIVE.set(_ACTIVE.get() + (cap,))
    try:
        yield cap
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    """Whether any capture is open in this thread / task."""
    return bool(_ACTIVE.get())


def wants(module, key: str) -> bool:
    """Whether an open capture records ``key`` of ``module``."""
    caps = _ACTIVE.get()
    return bool(caps) and any(c.wants(module, key) for c in caps)


def emit(module, key: str, value: Any | Callable[[], Any]) -> None:
    """Offer ``value`` (or a zero-argument callable computing it, called only when wanted) under ``key``."""
    caps = _ACTIVE.get()
    if not caps:
        return
    computed, have = None, False
    for c in caps:
        if c.wants(module, key):
            if not have:
                computed, have = (value() if callable(value) else value), True
            c.put(module, key, computed)


def option(module, name: str, default=None):
    """The option ``name`` of the first open capture that records something of ``module``."""
    for c in _ACTIVE.get():
        if c.name_of(module) is not None and name in c.options:
            return c.options[name]
    return default


def states(module) -> list[dict]:
    """The scratch dicts (:meth:`Capture.state`) of every open capture that knows ``module``."""
    return [c.state(module) for c in _ACTIVE.get() if c.name_of(module) is not None]
