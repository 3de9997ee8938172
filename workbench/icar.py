"""iCAR: bridging image classification and image-text alignment (Wei et al., CVPR 2023, published as iCLIP).

The paper turns an image classifier into something that can also be trained and used like CLIP with three
adaptations, implemented here one at a time:

1. **Cosine classifier.**  Logits are a scaled cosine similarity instead of a linear layer::

       z_c = tau * cos(f(x), w_c) = tau * <f/|f|, w_c/|w_c|>,     |z_c| <= tau

   with a temperature ``tau = exp(t)`` that is learnable (log-parametrised, clamped at ``tau_max``) or fixed
   (:class:`Temperature`, :func:`cosine_logits`).
2. **Text encoder as a meta-network.**  The class weight is produced from the class text by the text encoder
   ``w_c = g("class name: description")`` (:class:`TextEncoder`), *the same* encoder that embeds captions for
   image-text alignment, so a class can be added at inference time by writing its text.
3. **Class descriptions.**  Each class name is enriched with a description ("star: a shape with five
   points"); ``use_descriptions=False`` keeps the bare names, to measure what the descriptions add
   (:func:`class_text`).

Image-text alignment is the symmetric contrastive (InfoNCE) loss over a batch of N image-caption pairs::

    S_ij = tau_a * cos(f(x_i), g(t_j))
    L = 1/2 [ -1/N sum_i sum_j T_ij log softmax_j S_ij  -  1/N sum_j sum_i T_ij log softmax_i S_ij ]

where ``T`` is the identity, or — when identical captions occur in one batch — uniform over the pairs with the
same text, so a duplicate caption is not pushed away as a negative (:func:`contrastive_loss`).
**Deep fusion** (iCAR) trains one batch with both losses through the *same* image projection and the *same*
text encoder: ``L = L_cls(images of labelled classes; w = g(class texts)) + lambda * L_align(captions)``.
The baselines the paper compares are in :data:`METHODS`: linear classifier, cosine classifier with parametric
weights, alignment only and shallow multi-task fusion (separate heads); plus the intermediate steps used to
show the adaptations one at a time (text-encoder class weights without alignment, names-only iCAR).

Text is tokenised with a word-level vocabulary built from the data (:class:`WordTokenizer`, nothing is
downloaded). Texts longer than the context length are truncated (documented: the first
``context_length - 2`` words are kept, between ``[BOS]`` and ``[EOS]``).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from workbench.checkpoints import Checkpoint, CheckpointError, load_checkpoint, load_into, save_checkpoint
from workbench.models import create_model

__all__ = [
    "SPECIALS", "WordTokenizer", "ClassText", "parse_classes", "class_text", "class_texts",
    "Temperature", "cosine_logits", "contrastive_loss", "TextConfig", "TextEncoder", "SmallCNN",
    "ICARConfig", "ICARModel", "METHODS", "MethodSpec", "ClassWeightCache", "predict_proba",
    "retrieve_captions", "prototype_accuracy", "MAX_NAME_CHARS", "MAX_DESCRIPTION_CHARS",
    "save_model", "load_model",
]

# ----------------------------------------------------------------------------------------------- tokenizer

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = 0, 1, 2, 3
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_NO_SPACE_BEFORE = re.compile(r" ([,.:;!?)])")


class WordTokenizer:
    """Word-level tokenizer whose vocabulary is built from the data (lower-cased words and punctuation).

    ``encode(text)`` gives ``[BOS] w_1 ... w_n [EOS]``; with ``context_length`` the text is truncated to its
    first ``context_length - 2`` words (``[EOS]`` always closes the sequence). Unknown words map to ``[UNK]``.
    ``decode(encode(t)) == normalize(t)`` for every text made of vocabulary words.
    """

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("the vocabulary has duplicate entries")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @staticmethod
    def split(text: str) -> list[str]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        return _WORD.findall(text.lower())

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        counts: dict[str, int] = {}
        for t in texts:
            for w in cls.split(t):
                counts[w] = counts.get(w, 0) + 1
        words = sorted(w for w, c in counts.items() if c >= min_count and w not in SPECIALS)
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def normalize(cls, text: str) -> str:
        return _NO_SPACE_BEFORE.sub(r"\1", " ".join(cls.split(text)))

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in self.split(text) if w not in self.index]

    def encode(self, text: str, context_length: int | None = None) -> list[int]:
        ids = [self.index.get(w, UNK) for w in self.split(text)]
        if context_length is not None:
            if context_length < 3:
                raise ValueError("context_length must be at least 3 ([BOS], one word, [EOS])")
            ids = ids[: context_length - 2]
        return [BOS] + ids + [EOS]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == PAD or i == BOS:
                continue
            if i == EOS:
                break
            words.append(self.vocab[i] if 0 <= i < len(self.vocab) else SPECIALS[UNK])
        return _NO_SPACE_BEFORE.sub(r"\1", " ".join(words))

    def is_truncated(self, text: str, context_length: int) -> bool:
        return len(self.split(text)) > context_length - 2

    def batch(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """Token ids (N, context_length), padded with ``[PAD]`` (= 0) and truncated as documented."""
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.encode(t, context_length)
            out[i, : len(ids)] = torch.tensor(ids)
        return out


# ----------------------------------------------------------------------------------------- class texts

MAX_NAME_CHARS = 40
MAX_DESCRIPTION_CHARS = 300


@dataclass(frozen=True)
class ClassText:
    name: str
    description: str = ""


def _check_ascii(text: str, what: str) -> None:
    bad = [ch for ch in text if ord(ch) > 127 or (unicodedata.category(ch)[0] == "C" and ch not in "\t")]
    if bad:
        raise ValueError(f"{what} {text!r} has characters outside plain ASCII text ({''.join(bad[:5])!r}); "
                         "the word vocabulary only knows ASCII words")


def parse_classes(rows) -> tuple[list[ClassText], list[str]]:
    """Validate a class table: rows of ``(name, description)``, dicts, :class:`ClassText` or a DataFrame.

    Returns ``(classes, notices)``. Fully blank rows are skipped with a notice. Raises ``ValueError`` for an
    empty table, a description without a name, duplicate names (case-insensitive), non-ASCII text, a name
    longer than ``MAX_NAME_CHARS`` or a description longer than ``MAX_DESCRIPTION_CHARS`` characters.
    """
    if rows is None:
        raise ValueError("the class list is empty: add at least one class (name and description)")
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # pandas DataFrame
        rows = rows.values.tolist()
    classes: list[ClassText] = []
    notices: list[str] = []
    seen: dict[str, int] = {}
    blank = 0
    for r, row in enumerate(rows, start=1):
        if isinstance(row, ClassText):
            name, desc = row.name, row.description
        elif isinstance(row, dict):
            name, desc = row.get("name", ""), row.get("description", "")
        elif isinstance(row, str):
            name, desc = row, ""
        else:
            row = list(row)
            if not 1 <= len(row) <= 2:
                raise ValueError(f"row {r}: expected (name, description), got {len(row)} columns")
            name, desc = row[0], row[1] if len(row) > 1 else ""
        name = "" if name is None or (isinstance(name, float) and math.isnan(name)) else str(name).strip()
        desc = "" if desc is None or (isinstance(desc, float) and math.isnan(desc)) else str(desc).strip()
        if not name and not desc:
            blank += 1
            continue
        if not name:
            raise ValueError(f"row {r}: the description {desc[:40]!r} has no class name")
        _check_ascii(name, f"row {r}: name")
        _check_ascii(desc, f"row {r}: description")
        if len(name) > MAX_NAME_CHARS:
            raise ValueError(f"row {r}: the class name is {len(name)} characters long (at most {MAX_NAME_CHARS})")
        if len(desc) > MAX_DESCRIPTION_CHARS:
            raise ValueError(f"row {r}: the description of {name!r} is {len(desc)} characters long "
                             f"(at most {MAX_DESCRIPTION_CHARS})")
        if not re.search(r"[a-z0-9]", name.lower()):
            raise ValueError(f"row {r}: the class name {name!r} has no words (letters or digits)")
        key = WordTokenizer.normalize(name)
        if key in seen:
            raise ValueError(f"row {r}: duplicate class name {name!r} (already in row {seen[key]})")
        seen[key] = r
        classes.append(ClassText(name, desc))
    if blank:
        notices.append(f"ignored {blank} empty row{'s' if blank > 1 else ''}")
    if not classes:
        raise ValueError("the class list is empty: add at least one class (name and description)")
    return classes, notices


def class_text(c: ClassText, use_description: bool = True) -> str:
    """The text the meta-network sees: ``"name: description"`` (adaptation 3) or the bare ``"name"``."""
    if use_description and c.description:
        return f"{c.name}: {c.description}"
    return c.name


def class_texts(classes: Sequence[ClassText], use_description: bool = True) -> list[str]:
    return [class_text(c, use_description) for c in classes]


# ------------------------------------------------------------------------------- cosine classifier, losses


class Temperature(nn.Module):
    """tau = exp(t), learnable (log-parametrised) or fixed, clamped to ``max_value`` (CLIP uses 100)."""

    def __init__(self, init: float = 10.0, learnable: bool = True, max_value: float = 100.0):
        super().__init__()
        if not 0 < init <= max_value:
            raise ValueError(f"temperature init must be in (0, {max_value}], got {init}")
        t = torch.tensor(math.log(init))
        if learnable:
            self.log_tau = nn.Parameter(t)
        else:
            self.register_buffer("log_tau", t)
        self.max_value = float(max_value)

    def forward(self) -> torch.Tensor:
        return self.log_tau.clamp(max=math.log(self.max_value)).exp()


def cosine_logits(features: torch.Tensor, weights: torch.Tensor, tau) -> torch.Tensor:
    """``tau * cos(features_i, weights_c)`` for (B, D) features and (C, D) class weights."""
    if features.ndim != 2 or weights.ndim != 2 or features.shape[1] != weights.shape[1]:
        raise ValueError(f"expected (B, D) features and (C, D) weights, got {tuple(features.shape)} "
                         f"and {tuple(weights.shape)}")
    return tau * F.normalize(features, dim=-1) @ F.normalize(weights, dim=-1).t()


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, tau, text_ids: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Symmetric image-text InfoNCE over N pairs (rows of ``image_emb`` and ``text_emb``, L2-normalised here).

    ``text_ids`` (N,) optional: pairs whose texts are identical are all positives (targets uniform over them).
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    logits = cosine_logits(image_emb, text_emb, tau)
    n = logits.shape[0]
    if text_ids is None:
        target = torch.arange(n, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    pos = (text_ids[:, None] == text_ids[None, :]).to(logits.dtype)
    target = pos / pos.sum(1, keepdim=True)  # symmetric positives, so the same targets serve both directions
    li = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    lt = -(target * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return 0.5 * (li + lt)


# ---------------------------------------------------------------------------------------------- encoders


@dataclass
class TextConfig:
    vocab_size: int
    context_length: int = 24
    width: int = 64
    layers: int = 2
    heads: int = 4
    embed_dim: int = 64
    pool: str = "mean"  # "mean" over real tokens, or "bos": the output at the [BOS] position


class _Block(nn.Module):
    """Pre-norm transformer block; attention through ``F.scaled_dot_product_attention`` with a padding mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def attention(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), keep)
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    """Small bidirectional transformer: token + position embeddings, blocks, final norm, mean over the real
    tokens (padding excluded), linear projection to ``embed_dim``. Output is *not* normalised."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.token = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(_Block(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        nn.init.normal_(self.token.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool not in ("mean", "bos"):
            raise ValueError(f"pool must be 'mean' or 'bos', got {self.cfg.pool!r}")
        if ids.ndim != 2 or ids.shape[1] > self.cfg.context_length:
            raise ValueError(f"expected token ids (N, L) with L <= the context length {self.cfg.context_length}, "
                             f"got {tuple(ids.shape)}")
        keep = ids != PAD
        x = self.token(ids) + self.pos[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x, keep)
        x = self.ln(x)
        if self.cfg.pool == "bos":
            return self.proj(x[:, 0])
        w = keep.unsqueeze(-1).to(x.dtype)
        return self.proj((x * w).sum(1) / w.sum(1).clamp_min(1.0))


class SmallCNN(nn.Module):
    """Fast default image encoder: conv-BN-ReLU stages of width w, 2w, 4w (each followed by a 2x max pool)
    and 4w, then global average pooling -> ``num_features = 4w``."""

    def __init__(self, width: int = 16, in_chans: int = 3):
        super().__init__()

        def stage(i, o, pool):
            layers = [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.net = nn.Sequential(*stage(in_chans, width, True), *stage(width, 2 * width, True),
                                 *stage(2 * width, 4 * width, True), *stage(4 * width, 4 * width, False),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * width

    def forward(self, x):
        return self.net(x)


# ------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class MethodSpec:
    head: str | None  # "linear" | "cosine" (parametric weights) | "text" (weights from the text encoder) | None
    align: bool  # image-caption contrastive loss
    use_descriptions: bool = True  # class texts "name: description" vs "name"
    shared_projection: bool = True  # False = shallow fusion: separate image projections per task
    label: str = ""


METHODS: dict[str, MethodSpec] = {
    "linear": MethodSpec("linear", False, label="linear classifier"),
    "cosine": MethodSpec("cosine", False, label="cosine classifier (parametric weights)"),
    "text-cls": MethodSpec("text", False, label="cosine + text-encoder weights (no alignment)"),
    "align": MethodSpec(None, True, label="image-text alignment only"),
    "shallow": MethodSpec("cosine", True, shared_projection=False, label="shallow multi-task (separate heads)"),
    "icar": MethodSpec("text", True, label="iCAR deep fusion (names + descriptions)"),
    "icar-names": MethodSpec("text", True, use_descriptions=False, label="iCAR deep fusion (names only)"),
}


@dataclass
class ICARConfig:
    method: str = "icar"
    image_encoder: str = "cnn"  # "cnn" (SmallCNN) or "swin" (workbench.swin_v2 lite backbone)
    image_size: int = 32
    cnn_width: int = 16
    swin_name: str = "swinv2_lite_window4_64"
    swin_overrides: dict = field(default_factory=dict)  # more create_model overrides (e.g. window_size)
    embed_dim: int = 64
    num_classes: int = 0  # parametric heads only ("linear", "cosine")
    vocab_size: int = 0  # text encoder (methods with a "text" head or alignment)
    context_length: int = 24
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_pool: str = "mean"
    tau_init: float = 10.0
    learn_tau: bool = True
    tau_max: float = 100.0
    align_weight: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> MethodSpec:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {sorted(METHODS)}")
        return METHODS[self.method]

    @property
    def has_text(self) -> bool:
        return self.spec.head == "text" or self.spec.align

    def to_dict(self) -> dict:
        return asdict(self)


_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)


class ICARModel(nn.Module):
    """Image encoder + projection, optional text encoder, optional parametric head, per the method."""

    def __init__(self, cfg: ICARConfig):
        super().__init__()
        spec = cfg.spec
        self.cfg = cfg
        if cfg.image_encoder == "cnn":
            self.backbone = SmallCNN(cfg.cnn_width)
        elif cfg.image_encoder == "swin":
            self.backbone = create_model(cfg.swin_name, img_size=cfg.image_size, num_classes=0, **cfg.swin_overrides)
        else:
            raise ValueError(f"image_encoder must be 'cnn' or 'swin', got {cfg.image_encoder!r}")
        nf = self.backbone.num_features
        self.image_proj = nn.Linear(nf, cfg.embed_dim)
        if not spec.shared_projection:  # shallow fusion: the classification head has its own projection
            self.cls_proj = nn.Linear(nf, cfg.embed_dim)
        if spec.head in ("linear", "cosine"):
            if cfg.num_classes < 1:
                raise ValueError(f"method {cfg.method!r} needs num_classes >= 1")
            if spec.head == "linear":
                self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
            else:
                self.class_weight = nn.Parameter(torch.randn(cfg.num_classes, cfg.embed_dim) * 0.02)
        if cfg.has_text:
            if cfg.vocab_size <= len(SPECIALS):
                raise ValueError(f"method {cfg.method!r} needs a vocabulary (vocab_size > {len(SPECIALS)})")
            self.text = TextEncoder(TextConfig(cfg.vocab_size, cfg.context_length, cfg.text_width,
                                               cfg.text_layers, cfg.text_heads, cfg.embed_dim, cfg.text_pool))
            self.tau_align = Temperature(cfg.tau_init, cfg.learn_tau, cfg.tau_max)
        if spec.head in ("cosine", "text"):
            self.tau_cls = Temperature(cfg.tau_init, cfg.learn_tau, cfg.tau_max)

    # -- features
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, num_features) of images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        return self.backbone((images - _MEAN.to(images)) / 0.5)

    def encode_image(self, images: torch.Tensor, *, feats: torch.Tensor | None = None) -> torch.Tensor:
        """The (unnormalised) image embedding shared with the text space."""
        return self.image_proj(self.features(images) if feats is None else feats)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.cfg.has_text:
            raise ValueError(f"method {self.cfg.method!r} has no text encoder")
        return self.text(ids)

    def classify(self, images: torch.Tensor, class_ids: torch.Tensor | None = None, *,
                 feats: torch.Tensor | None = None) -> torch.Tensor:
        """Classification logits; ``class_ids`` (C, L) token ids of the class texts for the "text" head."""
        spec = self.cfg.spec
        feats = self.features(images) if feats is None else feats
        z = self.image_proj(feats) if spec.shared_projection else self.cls_proj(feats)
        if spec.head == "linear":
            return self.head(z)
        if spec.head == "cosine":
            return cosine_logits(z, self.class_weight, self.tau_cls())
        if spec.head == "text":
            if class_ids is None:
                raise ValueError("the text head needs the token ids of the class texts")
            return cosine_logits(z, self.encode_text(class_ids), self.tau_cls())
        raise ValueError(f"method {self.cfg.method!r} has no classification head")

    def loss(self, images, labels, caption_ids, caption_uid, class_ids=None):
        """Deep/shallow fusion loss of one mixed batch. ``labels`` = -1 for images whose class is held out of
        classification (they still take part in alignment). Returns ``(loss, {name: float})``."""
        spec = self.cfg.spec
        feats = self.features(images)
        total = feats.new_zeros(())
        logs = {}
        if spec.head is not None:
            m = labels >= 0
            if m.any():
                logits = self.classify(images[m], class_ids, feats=feats[m])
                l_cls = F.cross_entropy(logits, labels[m])
                total = total + l_cls
                logs["cls"] = float(l_cls.detach())
                logs["cls_acc"] = float((logits.argmax(1) == labels[m]).float().mean())
        if spec.align:
            l_al = contrastive_loss(self.encode_image(images, feats=feats), self.encode_text(caption_ids),
                                    self.tau_align(), caption_uid)
            total = total + self.cfg.align_weight * l_al
            logs["align"] = float(l_al.detach())
        return total, logs


# -------------------------------------------------------------------------------------- inference tools


class ClassWeightCache:
    """Normalised text embeddings of class texts, computed once per distinct text.

    Only texts not seen before go through the text encoder; the cache empties itself when the text encoder's
    parameters change (their in-place version counters move, as after an optimizer step or a load).
    """

    def __init__(self, model: ICARModel, tokenizer: WordTokenizer, batch_size: int = 1024):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._store: dict[str, torch.Tensor] = {}
        self._stamp = None
        self.hits = self.misses = 0

    def _param_stamp(self):
        return tuple((id(p), p._version) for p in self.model.text.parameters())

    def clear(self):
        self._store.clear()

    @torch.no_grad()
    def weights(self, texts: Sequence[str]) -> torch.Tensor:
        stamp = self._param_stamp()
        if stamp != self._stamp:
            self._store.clear()
            self._stamp = stamp
        todo = list(dict.fromkeys(t for t in texts if t not in self._store))
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        was = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i: i + self.batch_size]
                ids = self.tokenizer.batch(chunk, self.model.cfg.context_length)
                emb = F.normalize(self.model.encode_text(ids), dim=-1)
                self._store.update(zip(chunk, emb))
        finally:
            self.model.train(was)
        if not texts:
            return torch.empty(0, self.model.cfg.embed_dim)
        return torch.stack([self._store[t] for t in texts])


@torch.no_grad()
def predict_proba(model: ICARModel, tokenizer: WordTokenizer, images: torch.Tensor, classes,
                  use_descriptions: bool = True, cache: ClassWeightCache | None = None) -> torch.Tensor:
    """Zero-shot class probabilities (B, C) for any class list — classes may be new at inference time.

    softmax over ``tau * cos(image embedding, g(class text))``: the classification projection and ``tau_cls``
    for methods whose class weights come from the text encoder, the alignment projection and ``tau_align``
    for the others (alignment only, shallow fusion). ``classes`` is validated by :func:`parse_classes`.
    """
    if model.cfg.spec.head != "text" and not model.cfg.spec.align:
        raise ValueError(f"method {model.cfg.method!r} cannot classify from class texts (no text encoder)")
    classes, _ = parse_classes(classes)
    texts = class_texts(classes, use_descriptions)
    was = model.training
    model.eval()
    try:
        w = cache.weights(texts) if cache is not None else \
            F.normalize(model.encode_text(tokenizer.batch(texts, model.cfg.context_length)), dim=-1)
        feats = model.features(images)
        z = model.image_proj(feats) if model.cfg.spec.shared_projection or model.cfg.spec.head != "text" \
            else model.cls_proj(feats)
        tau = model.tau_cls() if model.cfg.spec.head == "text" else model.tau_align()
        return cosine_logits(z, w, tau).softmax(-1)
    finally:
        model.train(was)


@torch.no_grad()
def retrieve_captions(model: ICARModel, tokenizer: WordTokenizer, images: torch.Tensor, captions: Sequence[str],
                      k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Image -> text retrieval: (scores, indices), each (B, k), of the k captions most similar to each image."""
    if not captions:
        raise ValueError("no captions to retrieve from")
    was = model.training
    model.eval()
    try:
        t = F.normalize(model.encode_text(tokenizer.batch(list(captions), model.cfg.context_length)), dim=-1)
        z = F.normalize(model.encode_image(images), dim=-1)
        return (z @ t.t()).topk(min(k, len(captions)), dim=1)
    finally:
        model.train(was)


def prototype_accuracy(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                       query_labels: torch.Tensor) -> float:
    """Few-shot accuracy of the nearest class mean (cosine) classifier built from ``support`` features."""
    classes = torch.unique(support_labels)
    s = F.normalize(support, dim=-1)
    protos = torch.stack([s[support_labels == c].mean(0) for c in classes])
    pred = classes[(F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).t()).argmax(1)]
    return float((pred == query_labels).double().mean())


# ------------------------------------------------------------------------------------ saving and loading
def save_model(path, model: ICARModel, tokenizer: WordTokenizer, *, command: str | None = None,
               extra: dict | None = None, half: bool = True):
    """Checkpoint with everything needed to rebuild the model: its config and the tokenizer vocabulary."""
    info = {"icar_config": model.cfg.to_dict(), "vocab": list(tokenizer.vocab), **(extra or {})}
    return save_checkpoint(path, model, config=model.cfg.to_dict(), command=command, extra=info, half=half)


def load_model(source) -> tuple[ICARModel, WordTokenizer, dict]:
    """Rebuild ``(model in eval mode, tokenizer, extra)`` from a checkpoint path or a loaded Checkpoint."""
    ck = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    if "icar_config" not in ck.extra or "vocab" not in ck.extra:
        raise CheckpointError("this checkpoint is not an iCAR model (no icar_config / vocab in it)")
    cfg = dict(ck.extra["icar_config"])
    model = ICARModel(ICARConfig(**cfg))
    load_into(model, ck)
    return model.eval(), WordTokenizer(ck.extra["vocab"]), dict(ck.extra)
