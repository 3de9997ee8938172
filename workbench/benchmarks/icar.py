"""``workbench bench icar``: what a text-encoder classifier costs.

* ``class weights``: producing the (C, D) class-weight matrix from C class texts ("name: description") with
  the demo text encoder, for C = 10 / 1,000 / 10,000 classes:
  ``cold`` (empty cache: every text through the encoder), ``warm`` (every text cached: a look-up) and
  ``one edited`` (one class text changed: one text through the encoder, the rest from the cache) —
  :class:`workbench.icar.ClassWeightCache`;
* ``classify``: images per second of the cosine classifier (image encoder + cosine logits against cached
  weights), batch 256, for C = 10 / 1,000 / 10,000.

CPU, threads as given (default 1). Class texts beyond the ten shapes classes are made of vocabulary words
(deterministic), so every one is distinct and of realistic length.
"""
from __future__ import annotations

import argparse

from workbench.helptext import HelpFormatter

DURATION = "about 1 minute"  # a default run on 2 cores


def _class_texts(tok, n: int, seed: int = 0) -> list[str]:
    import numpy as np

    from workbench import icar

    base = icar.class_texts(icar.parse_classes(icar.default_class_rows())[0])
    words = [w for w in tok.vocab[len(icar.SPECIALS):] if w.isalpha()]
    rng = np.random.default_rng(seed)
    out, seen = list(base[:n]), set(base[:n])
    while len(out) < n:
        t = f"{' '.join(rng.choice(words, 2))}: a shape {' '.join(rng.choice(words, 6))}"
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _measure(model, tok, n: int, repeats: int, batch: int) -> dict:
    import torch

    from workbench import bench, icar

    s = model.cfg.image_size
    texts = _class_texts(tok, n)
    edited = list(texts)
    cold_cache = icar.ClassWeightCache(model, tok)
    warm_cache = icar.ClassWeightCache(model, tok)
    edit_cache = icar.ClassWeightCache(model, tok)
    warm_cache.weights(texts)
    edit_cache.weights(texts)
    state = {"i": 0}

    def cold():
        cold_cache.clear()
        cold_cache.weights(texts)

    def warm():
        warm_cache.weights(texts)

    def one_edit():  # a different single edited description every call: exactly one encoder pass
        state["i"] += 1
        edited[0] = f"{texts[0]} variant {state['i']}"
        edit_cache.weights(edited)

    reps = max(3, repeats if n <= 1000 else 3)
    t = bench.interleaved({"cold": cold, "warm": warm, "one edited": one_edit}, repeats=reps, warmup=1)
    w = warm_cache.weights(texts)
    x = torch.rand(batch, 3, s, s)

    def classify():
        with torch.no_grad():
            z = model.encode_image(x)
            icar.cosine_logits(z, w, model.tau_cls()).argmax(1)

    tc = bench.interleaved({"classify": classify}, repeats=repeats, warmup=1)
    row = {"classes": n}
    for k, v in t.items():
        row[f"{k} ms"] = round(1e3 * bench.summarize(v)["median"], 3)
    row["cold texts/s"] = round(n / bench.summarize(t["cold"])["median"], 1)
    row["classify img/s"] = round(batch / bench.summarize(tc["classify"])["median"], 1)
    return row


def main(argv: list[str] | None = None) -> None:
    import torch

    from workbench import bench, icar

    p = argparse.ArgumentParser(prog="workbench bench icar", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 1000, 10000], help="Class counts to time.")
    p.add_argument("--repeats", type=int, default=9, help="Timed repetitions per method.")
    p.add_argument("--batch", type=int, default=256, help="Images per classification batch.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    bench.add_output_arguments(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, tok, _ = icar.load_demo()
    s = model.cfg.image_size
    rows = []
    for n in a.classes:
        row = _measure(model, tok, n, a.repeats, a.batch)
        rows.append(row)
        print(row)
    notes = (f"Demo text encoder ({model.cfg.text_layers} layers, width {model.cfg.text_width}, context "
             f"{model.cfg.context_length}) and image encoder ({model.cfg.image_encoder}, {s} px); medians of "
             f"interleaved repeats; {a.threads} thread(s). `cold` = every class text through the text encoder; "
             "`warm` = all cached (dictionary look-ups + stack); `one edited` = one class text changed. "
             f"`classify` = batch {a.batch} through the image encoder + cosine logits against cached weights. "
             "The machine is shared (see the load average): compare rows of one run, not runs.")
    bench.write_results("icar", rows, title="iCAR: class weights from text, with caching, and classification",
                        notes=notes, out_dir=bench.output_dir(a))


if __name__ == "__main__":
    main()
