"""iCAR demo: a cosine classifier whose class weights are *written* — edit a class table (name + description) and
see the zero-shot probabilities with and without descriptions, and the captions nearest to the image.

Used by the "iCAR" app tab, the explorer of notebook 06 and the tests. The model is the seed-0 iCAR deep-fusion
model of ``workbench train icar-study --commit --save-demo`` (ring, pentagon and crescent never labelled).
"""
from __future__ import annotations

from collections.abc import Sequence

from workbench import icar
from workbench.checkpoints import load_demo
from workbench.data import shapes
from workbench.data.transforms import to_tensor
from workbench.demos.common import Panel, cached, check_int, read_image

CHECKPOINT = "icar_shapes"
COMMAND = "workbench train icar-demo"
HEADERS = ["name", "description"]
# example images: (shape, colour, size, background, seed); the held-out classes come first
EXAMPLES = [
    ("ring", "red", "large", "plain", 0), ("pentagon", "blue", "large", "striped", 1),
    ("crescent", "yellow", "large", "plain", 2), ("star", "green", "large", "checkered", 3),
    ("circle", "purple", "medium", "plain", 4), ("square", "orange", "large", "gradient", 5),
    ("triangle", "cyan", "large", "noisy", 6), ("hexagon", "white", "large", "plain", 7),
    ("diamond", "red", "medium", "striped", 8), ("cross", "blue", "large", "plain", 9),
]


@cached
def bundle():
    """``(model, tokenizer, captions, extra)`` of the demo, loaded once per process."""
    model, tok, extra = icar.load_model(load_demo(CHECKPOINT, COMMAND))
    return model, tok, caption_pool(size=model.cfg.image_size), extra


def example_names() -> list[str]:
    return [f"{s} ({c}, {z}, {b} background)" for s, c, z, b, _ in EXAMPLES]


def example_image(choice: str, size: int = 128):
    names = example_names()
    if choice not in names:
        raise ValueError(f"unknown example {choice!r}; choose one of {names[:3]} ...")
    s, c, z, b, seed = EXAMPLES[names.index(choice)]
    return shapes.render(s, c, z, b, seed=seed, image_size=size)["image"]


def held_out() -> list[str]:
    return list(bundle()[3].get("held_out", []))


def caption_pool(n: int = 3000, seed: int = 100, size: int = 32) -> list[str]:
    """Distinct captions of a shapes set (by default the study's training set) to retrieve from."""
    return sorted(set(shapes.load(shapes.ShapesConfig(n=n, size=size, seed=seed)).captions))


def default_class_rows(names=None) -> list[list[str]]:
    """``[[name, description], ...]`` for the shapes classes (all, or ``names``)."""
    names = shapes.CLASSES if names is None else names
    return [[n, shapes.CLASS_DESCRIPTIONS[n]] for n in names]


def rows_from_lines(text: str) -> list[list[str]]:
    """``"name: description"`` per line (the description is optional) -> rows for :func:`parse_classes`."""
    if not isinstance(text, str):
        raise ValueError("the class list must be text, one 'name: description' per line")
    rows = []
    for line in text.splitlines():
        name, _, desc = line.partition(":")
        rows.append([name.strip(), desc.strip()])
    return rows


def zero_shot_report(model: icar.ICARModel, tokenizer: icar.WordTokenizer, image, rows, *, k: int = 5,
                     captions: Sequence[str] | None = None, cache: icar.ClassWeightCache | None = None) -> dict:
    """Everything the app tab and the notebook explorer show for one image and one class table.

    Returns ``{"names", "with_desc", "names_only", "captions", "scores", "image", "notices"}``: class
    probabilities with "name: description" texts and with names only, the ``k`` nearest captions and their
    cosine similarities, the (resized) image and notices (ignored rows, unknown words, truncation, resizing).
    """
    if not 1 <= int(k) <= 50:
        raise ValueError(f"k (number of captions) must be between 1 and 50, got {k}")
    classes, notices = icar.parse_classes(rows)
    arr, img_notes = read_image(image, size=model.cfg.image_size)
    x = to_tensor(arr)[None]
    notices += img_notes
    texts = icar.class_texts(classes)
    unknown = sorted({w for t in texts for w in tokenizer.unknown_words(t)})
    if unknown:
        notices.append("words the text encoder never saw (read as [UNK]): " + ", ".join(unknown[:12])
                       + (" ..." if len(unknown) > 12 else ""))
    cut = [c.name for c, t in zip(classes, texts) if tokenizer.is_truncated(t, model.cfg.context_length)]
    if cut:
        notices.append(f"texts truncated to {model.cfg.context_length - 2} words: " + ", ".join(cut))
    p_desc = icar.predict_proba(model, tokenizer, x, classes, True, cache)[0]
    p_names = icar.predict_proba(model, tokenizer, x, classes, False, cache)[0]
    caps = list(captions) if captions is not None else caption_pool()
    scores, idx = icar.retrieve_captions(model, tokenizer, x, caps, int(k))
    return {"names": [c.name for c in classes], "with_desc": [round(float(v), 4) for v in p_desc],
            "names_only": [round(float(v), 4) for v in p_names],
            "captions": [caps[i] for i in idx[0].tolist()], "scores": [round(float(s), 4) for s in scores[0]],
            "image": arr, "notices": notices}


def table_rows(table) -> list:
    """Rows of a class table (a gradio Dataframe value, a pandas frame, a dict with "data" or a list of pairs)."""
    if table is None:
        raise ValueError("the class list is empty: add at least one class (name and description)")
    if hasattr(table, "values") and hasattr(table, "columns"):
        return table.values.tolist()
    if isinstance(table, dict) and "data" in table:
        return table["data"]
    return list(table)


def panel(example: str | None = None, upload=None, table=None, k: int = 5) -> Panel:
    """Probabilities with and without descriptions, the nearest captions and the numbers, for an image (the
    upload when given, else an example) and a class table (default: all ten classes)."""
    from workbench.viz import icar as vi

    model, tok, captions, extra = bundle()
    k = check_int("captions to retrieve", k, 1, 10)
    image = upload if upload is not None else example_image(example or example_names()[0])
    rows = default_class_rows() if table is None else table_rows(table)
    rep = zero_shot_report(model, tok, image, rows, k=k, captions=captions)
    m = extra.get("metrics") or {}
    text = vi.probability_markdown(rep)
    if m.get("zs_names") is not None:
        text += (f"\n\nOn the held-out classes ({', '.join(extra.get('held_out', []))}), never labelled in training, "
                 f"this model's zero-shot accuracy is **{m['zs_names']:.1%}** with names and "
                 f"{m.get('zs_desc', float('nan')):.1%} with descriptions (3-way; chance 33%); seen classes "
                 f"{m.get('seen_acc', float('nan')):.1%}.")
    return Panel({"probabilities": vi.probability_chart(rep["names"], rep["with_desc"], rep["names_only"]),
                  "captions": vi.caption_chart(rep["captions"], rep["scores"])}, text, rep["notices"], values=rep)
