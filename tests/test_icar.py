"""Tests of workbench.icar: cosine classifier, text meta-network, descriptions, contrastive loss, tokenizer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench import icar
from workbench.data import shapes

torch.set_num_threads(1)

CLASSES = [icar.ClassText(n, shapes.CLASS_DESCRIPTIONS[n]) for n in shapes.CLASSES]


@pytest.fixture(scope="module")
def data():
    return shapes.generate(shapes.ShapesConfig(n=64, size=32, seed=3))


@pytest.fixture(scope="module")
def tok(data):
    return icar.WordTokenizer.build(data.captions + icar.class_texts(CLASSES) + ["blob a thing"])


def make_model(tok, method="icar", **kw):
    torch.manual_seed(0)
    m = icar.ICARModel(icar.ICARConfig(method=method, vocab_size=len(tok), num_classes=10, **kw))
    return m.eval()


def images_of(data, n=8):
    return torch.tensor(data.images[:n]).permute(0, 3, 1, 2).float() / 255


# ------------------------------------------------------------------------------------------- tokenizer

def test_tokenizer_round_trip_on_all_texts(data, tok):
    for t in data.captions + icar.class_texts(CLASSES):
        ids = tok.encode(t)
        assert ids[0] == icar.BOS and ids[-1] == icar.EOS and icar.UNK not in ids
        assert tok.decode(ids) == t.lower()
        assert tok.encode(tok.decode(ids)) == ids
    # the padded batch decodes to the same texts
    batch = tok.batch(data.captions[:5], 24)
    assert [tok.decode(r) for r in batch] == [c.lower() for c in data.captions[:5]]


def test_tokenizer_truncation_unknown_words_and_vocab_checks(tok):
    long = " ".join(["circle"] * 50)
    ids = tok.encode(long, context_length=10)
    assert len(ids) == 10 and ids[-1] == icar.EOS
    assert tok.decode(ids) == " ".join(["circle"] * 8)  # documented: first context_length - 2 words
    assert tok.is_truncated(long, 10) and not tok.is_truncated("circle", 10)
    assert tok.encode("zorblax circle")[1] == icar.UNK
    assert tok.unknown_words("Zorblax circle") == ["zorblax"]
    with pytest.raises(ValueError, match="special tokens"):
        icar.WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="at least 3"):
        tok.encode("circle", context_length=2)
    with pytest.raises(ValueError, match="string"):
        tok.encode(3)


# ----------------------------------------------------------------------------------------- class tables

def test_parse_classes_errors_and_blank_rows():
    classes, notes = icar.parse_classes([("star", "five points"), ("", ""), ["ring", None]])
    assert classes == [icar.ClassText("star", "five points"), icar.ClassText("ring", "")]
    assert notes == ["ignored 1 empty row"]
    with pytest.raises(ValueError, match="empty"):
        icar.parse_classes([])
    with pytest.raises(ValueError, match="empty"):
        icar.parse_classes([("", ""), (" ", " ")])
    with pytest.raises(ValueError, match="duplicate class name 'Star'"):
        icar.parse_classes([("star", "a"), ("Star", "b")])
    with pytest.raises(ValueError, match="ASCII"):
        icar.parse_classes([("étoile", "five points")])
    with pytest.raises(ValueError, match="ASCII"):
        icar.parse_classes([("star", "five points \u2605")])
    with pytest.raises(ValueError, match="at most 300"):
        icar.parse_classes([("star", "x" * 301)])
    with pytest.raises(ValueError, match="no class name"):
        icar.parse_classes([("", "a thing")])
    with pytest.raises(ValueError, match="no words"):
        icar.parse_classes([("!!", "")])


def test_parse_classes_accepts_a_dataframe():
    import pandas as pd
    df = pd.DataFrame({"name": ["star", "ring", ""], "description": ["five points", "a hole", ""]})
    classes, notes = icar.parse_classes(df)
    assert [c.name for c in classes] == ["star", "ring"] and notes


def test_class_text_with_and_without_description():
    c = icar.ClassText("star", "a shape with five sharp points")
    assert icar.class_text(c) == "star: a shape with five sharp points"
    assert icar.class_text(c, use_description=False) == "star"
    assert icar.class_text(icar.ClassText("star")) == "star"


# ---------------------------------------------------------------------------- cosine classifier, losses

def test_cosine_logits_match_float64_loop_and_are_bounded_by_tau():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 5, generator=g) * 10
    w = torch.randn(4, 5, generator=g) * 0.1
    tau = 13.0
    z = icar.cosine_logits(f, w, tau)
    assert z.abs().max() <= tau * (1 + 1e-6)
    f64, w64 = f.double(), w.double()
    for i in range(7):
        for c in range(4):
            ref = tau * float(f64[i] @ w64[c]) / math.sqrt(float(f64[i] @ f64[i]) * float(w64[c] @ w64[c]))
            assert abs(float(z[i, c]) - ref) < 1e-4
    # parallel weight -> exactly +tau; antiparallel -> -tau
    z2 = icar.cosine_logits(f[:1], torch.cat([3 * f[:1], -f[:1]]), tau)
    assert torch.allclose(z2, torch.tensor([[tau, -tau]]), atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        icar.cosine_logits(f, torch.randn(4, 6), tau)


def test_temperature_learnable_fixed_and_clamped():
    t = icar.Temperature(10.0, learnable=True, max_value=100.0)
    assert isinstance(t.log_tau, torch.nn.Parameter) and abs(float(t().detach()) - 10.0) < 1e-5
    with torch.no_grad():
        t.log_tau.fill_(math.log(1e4))
    assert abs(float(t().detach()) - 100.0) < 1e-3
    fixed = icar.Temperature(5.0, learnable=False)
    assert not list(fixed.parameters()) and abs(float(fixed()) - 5.0) < 1e-5
    with pytest.raises(ValueError):
        icar.Temperature(0.0)


def _contrastive_reference(img, txt, tau, text_ids):
    """float64 loops: mean over rows of -sum_j T_ij log softmax, both directions, averaged."""
    img = img.double() / img.double().norm(dim=1, keepdim=True)
    txt = txt.double() / txt.double().norm(dim=1, keepdim=True)
    n = img.shape[0]
    s = [[tau * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    pos = [[1.0 if text_ids[i] == text_ids[j] else 0.0 for j in range(n)] for i in range(n)]
    total = 0.0
    for direction in (0, 1):
        for i in range(n):
            row = [s[i][j] if direction == 0 else s[j][i] for j in range(n)]
            lse = math.log(sum(math.exp(v) for v in row))
            npos = sum(pos[i])
            total -= sum(pos[i][j] / npos * (row[j] - lse) for j in range(n)) / n
    return total / 2


def test_contrastive_loss_equals_float64_reference():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    got = icar.contrastive_loss(img, txt, 7.0)
    assert abs(float(got) - _contrastive_reference(img, txt, 7.0, list(range(6)))) < 1e-5
    # unique text ids give exactly the plain CLIP loss; duplicates become shared positives
    same = icar.contrastive_loss(img, txt, 7.0, torch.arange(6))
    assert abs(float(same) - float(got)) < 1e-6
    ids = [0, 1, 0, 2, 1, 3]
    dup = icar.contrastive_loss(img, txt, 7.0, torch.tensor(ids))
    assert abs(float(dup) - _contrastive_reference(img, txt, 7.0, ids)) < 1e-5
    with pytest.raises(ValueError, match="one shape"):
        icar.contrastive_loss(img, txt[:5], 7.0)


def test_prototype_accuracy_matches_slow_loop():
    g = torch.Generator().manual_seed(2)
    sup, sl = torch.randn(12, 4, generator=g), torch.tensor([0, 0, 0, 0, 3, 3, 3, 3, 5, 5, 5, 5])
    q = torch.randn(20, 4, generator=g)
    ql = torch.tensor([0, 3, 5])[torch.randint(0, 3, (20,), generator=g)]
    got = icar.prototype_accuracy(sup, sl, q, ql)
    sup64, q64 = sup.double(), q.double()
    protos = {}
    for c in (0, 3, 5):
        rows = [sup64[i] / sup64[i].norm() for i in range(12) if sl[i] == c]
        protos[c] = sum(rows) / len(rows)
    correct = 0
    for i in range(20):
        cos = {c: float(q64[i] @ p) / float(q64[i].norm() * p.norm()) for c, p in protos.items()}
        correct += max(cos, key=cos.get) == int(ql[i])
    assert abs(got - correct / 20) < 1e-9


# ----------------------------------------------------------------------------------- the text encoder

def test_text_embedding_does_not_depend_on_padding_or_batch(tok):
    m = make_model(tok)
    texts = ["star: a shape with five sharp points", "circle", "a large red cross on a noisy background"]
    together = m.encode_text(tok.batch(texts, 24))
    for i, t in enumerate(texts):
        alone = m.encode_text(tok.batch([t], len(tok.encode(t))))  # no padding at all
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_class_weights_change_when_only_the_description_changes(tok):
    m = make_model(tok)
    cache = icar.ClassWeightCache(m, tok)
    a = [icar.ClassText("star", "a shape with five sharp points"), icar.ClassText("circle", "a round shape")]
    b = [icar.ClassText("star", "a shape with six equal sides"), icar.ClassText("circle", "a round shape")]
    wa = cache.weights(icar.class_texts(a))
    wb = cache.weights(icar.class_texts(b))
    assert (wa[0] - wb[0]).norm() > 1e-3  # the edited class moves
    assert torch.equal(wa[1], wb[1])  # the untouched class does not
    # names only: the description is ignored
    na, nb = cache.weights(icar.class_texts(a, False)), cache.weights(icar.class_texts(b, False))
    assert torch.equal(na, nb)
    x = images_of(tok_data := shapes.generate(shapes.ShapesConfig(n=4, size=32, seed=1)), 4)
    pa, pb = icar.predict_proba(m, tok, x, a), icar.predict_proba(m, tok, x, b)
    assert (pa - pb).abs().max() > 1e-6
    assert torch.allclose(icar.predict_proba(m, tok, x, a, use_descriptions=False),
                          icar.predict_proba(m, tok, x, b, use_descriptions=False))
    del tok_data


def test_cache_encodes_only_new_texts_and_refreshes_after_training(tok):
    m = make_model(tok)
    cache = icar.ClassWeightCache(m, tok)
    texts = icar.class_texts(CLASSES)
    w1 = cache.weights(texts)
    direct = F.normalize(m.encode_text(tok.batch(texts, 24)), dim=-1)
    assert torch.allclose(w1, direct, atol=1e-6)
    assert (cache.hits, cache.misses) == (0, 10)
    cache.weights(texts[:3] + ["blob: a thing"])
    assert (cache.hits, cache.misses) == (3, 11)
    # one optimizer step on the text encoder invalidates the cache
    opt = torch.optim.SGD(m.text.parameters(), lr=0.5)
    m.encode_text(tok.batch(texts, 24)).pow(2).sum().backward()
    opt.step()
    w2 = cache.weights(texts)
    fresh = F.normalize(m.encode_text(tok.batch(texts, 24)), dim=-1)
    assert torch.allclose(w2, fresh, atol=1e-6) and not torch.allclose(w1, w2, atol=1e-4)


def test_zero_shot_class_added_at_inference_time(data, tok):
    m = make_model(tok)
    x = images_of(data, 6)
    p10 = icar.predict_proba(m, tok, x, CLASSES)
    p11 = icar.predict_proba(m, tok, x, CLASSES + [icar.ClassText("blob", "a thing")])
    assert p10.shape == (6, 10) and p11.shape == (6, 11)
    assert torch.allclose(p11.sum(1), torch.ones(6), atol=1e-5)
    # softmax over a longer list keeps the ratios among the old classes (no retraining, no re-fit)
    assert torch.allclose(p11[:, :10] / p11[:, :10].sum(1, keepdim=True), p10, atol=1e-5)
    # the new class's logit is tau * cos(image embedding, text embedding of its text): check the log-ratio
    z = F.normalize(m.encode_image(x), dim=-1).double()
    w = F.normalize(m.encode_text(tok.batch([icar.class_text(CLASSES[0]), "blob: a thing"], 24)), dim=-1).double()
    tau = float(m.tau_cls().detach())
    ref = tau * (z @ w[1] - z @ w[0])
    assert torch.allclose(torch.log(p11[:, 10] / p11[:, 0]).double(), ref, atol=1e-4)


def test_methods_build_the_documented_parts(tok, data):
    x, y = images_of(data, 8), torch.tensor(data.labels[:8])
    cap = tok.batch(data.captions[:8], 24)
    uid = torch.arange(8)
    cid = tok.batch(icar.class_texts(CLASSES), 24)
    for name, spec in icar.METHODS.items():
        m = make_model(tok, name).train()
        assert hasattr(m, "text") == (spec.head == "text" or spec.align)
        assert hasattr(m, "cls_proj") == (not spec.shared_projection)
        loss, logs = m.loss(x, y, cap, uid, cid)
        assert torch.isfinite(loss)
        assert ("align" in logs) == spec.align and ("cls" in logs) == (spec.head is not None)
        # the loss is the sum of its logged parts
        assert abs(float(loss.detach()) - logs.get("cls", 0.0) - logs.get("align", 0.0)) < 1e-5
        loss.backward()
        if spec.head == "text":  # class weights come from the text encoder: classification trains it
            m.zero_grad()
            l_cls = F.cross_entropy(m.classify(x, cid), y)
            l_cls.backward()
            assert m.text.token.weight.grad.abs().sum() > 0
    # images of held-out classes (label -1) take no part in classification
    m = make_model(tok, "cosine")
    loss, logs = m.loss(x, torch.full((8,), -1), cap, uid, cid)
    assert float(loss) == 0.0 and logs == {}


def test_bad_inputs_raise_clear_errors(tok):
    with pytest.raises(ValueError, match="unknown method"):
        icar.ICARModel(icar.ICARConfig(method="nope", vocab_size=len(tok)))
    with pytest.raises(ValueError, match="num_classes"):
        icar.ICARModel(icar.ICARConfig(method="linear"))
    with pytest.raises(ValueError, match="vocabulary"):
        icar.ICARModel(icar.ICARConfig(method="icar"))
    with pytest.raises(ValueError, match="image_encoder"):
        icar.ICARModel(icar.ICARConfig(method="icar", vocab_size=len(tok), image_encoder="vgg"))
    m = make_model(tok)
    with pytest.raises(ValueError, match="NaN"):
        m.features(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m.features(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="context"):
        m.encode_text(torch.ones(1, 40, dtype=torch.long))
    lin = make_model(tok, "linear")
    with pytest.raises(ValueError, match="no text encoder"):
        icar.predict_proba(lin, tok, torch.rand(1, 3, 32, 32), CLASSES)
    with pytest.raises(ValueError, match="empty"):
        icar.predict_proba(m, tok, torch.rand(1, 3, 32, 32), [])


def test_retrieve_captions_ranks_by_cosine(tok, data):
    m = make_model(tok)
    x = images_of(data, 3)
    caps = list(dict.fromkeys(data.captions))[:12]
    scores, idx = icar.retrieve_captions(m, tok, x, caps, k=4)
    z = F.normalize(m.encode_image(x), dim=-1).double()
    t = F.normalize(m.encode_text(tok.batch(caps, 24)), dim=-1).double()
    full = (z @ t.t()).detach().numpy()
    for i in range(3):
        order = np.argsort(-full[i])[:4]
        assert list(idx[i].numpy()) == list(order)
        assert np.allclose(scores[i].numpy(), full[i][order], atol=1e-5)
    with pytest.raises(ValueError, match="no captions"):
        icar.retrieve_captions(m, tok, x, [])


# ------------------------------------------------------------------------------ the demo model and the app

@pytest.fixture(scope="module")
def demo():
    from workbench.demos import icar as demo_mod

    model, tok, caps, _ = demo_mod.bundle()
    return model, tok, caps


def test_demo_checkpoint_zero_shot_beats_chance_on_held_out_classes(demo):
    """The held-out classes were never labels: their class weights are written at inference time."""
    from workbench.studies.icar import HELD_OUT, class_list

    model, tok, _ = demo
    d = shapes.generate(shapes.ShapesConfig(n=300, size=model.cfg.image_size, seed=777, classes=HELD_OUT))
    y = torch.tensor([HELD_OUT.index(shapes.CLASSES[int(l)]) for l in d.labels])
    x = torch.tensor(d.images).permute(0, 3, 1, 2).float() / 255
    p = icar.predict_proba(model, tok, x, class_list(HELD_OUT), use_descriptions=False)
    acc = float((p.argmax(1) == y).float().mean())
    # chance is 1/3; a binomial 3-sigma band around chance for n=300 is +-0.082
    assert acc > 1 / 3 + 0.082 + 0.1, acc


def test_demo_checkpoint_is_right_on_the_app_examples(demo):
    """What a user sees first: the app's ten example images, scored against all ten classes as the tab does
    (top-1 with "name: description" and with names only), and the three held-out ones against the held-out classes
    (the tab's "Held-out classes only" button)."""
    from workbench.demos import icar as demo_mod

    model, tok, caps = demo
    rows, held_rows = demo_mod.default_class_rows(), demo_mod.default_class_rows(["ring", "pentagon", "crescent"])
    right = {"with_desc": 0, "names_only": 0}
    for ex in demo_mod.example_names():
        truth = ex.split()[0]
        rep = demo_mod.zero_shot_report(model, tok, demo_mod.example_image(ex), rows, k=1, captions=caps)
        for key in right:
            right[key] += rep["names"][int(np.argmax(rep[key]))] == truth
        if truth in ("ring", "pentagon", "crescent"):
            rep = demo_mod.zero_shot_report(model, tok, demo_mod.example_image(ex), held_rows, k=1, captions=caps)
            assert rep["names"][int(np.argmax(rep["names_only"]))] == truth, ex
    assert min(right.values()) >= 9, right


def test_demo_checkpoint_classifies_unseen_images_of_the_seen_classes(demo):
    """Fresh shapes of the seven labelled classes, classified through the class names' text weights."""
    from workbench.studies.icar import SEEN, class_list

    model, tok, _ = demo
    d = shapes.generate(shapes.ShapesConfig(n=350, size=model.cfg.image_size, seed=778, classes=SEEN))
    y = torch.tensor([SEEN.index(shapes.CLASSES[int(l)]) for l in d.labels])
    x = torch.tensor(d.images).permute(0, 3, 1, 2).float() / 255
    acc = float((icar.predict_proba(model, tok, x, class_list(SEEN), use_descriptions=False).argmax(1) == y)
                .float().mean())
    assert acc >= 0.9, acc


def test_demo_checkpoint_round_trip(tmp_path, demo):
    model, tok, _ = demo
    path = icar.save_model(tmp_path / "m.pt", model, tok, half=False)
    m2, tok2, extra = icar.load_model(path)
    assert tok2.vocab == tok.vocab and m2.cfg == model.cfg
    x = torch.rand(2, 3, model.cfg.image_size, model.cfg.image_size)
    assert torch.allclose(m2.encode_image(x), model.encode_image(x), atol=1e-6)
    from workbench.checkpoints import CheckpointError, save_checkpoint
    save_checkpoint(tmp_path / "plain.pt", torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="not an iCAR model"):
        icar.load_model(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not found"):
        icar.load_model(tmp_path / "missing.pt")


def test_zero_shot_report_and_its_bad_inputs(demo):
    from workbench.demos import icar as demo_mod

    model, tok, caps = demo
    img = shapes.render("ring", "red", "large", "plain", seed=0, image_size=64)["image"]
    rows = demo_mod.default_class_rows() + [["", ""]]
    rep = demo_mod.zero_shot_report(model, tok, img, rows, k=3, captions=caps)
    assert rep["names"] == list(shapes.CLASSES) and len(rep["captions"]) == 3
    assert abs(sum(rep["with_desc"]) - 1) < 1e-3 and abs(sum(rep["names_only"]) - 1) < 1e-3
    assert rep["scores"] == sorted(rep["scores"], reverse=True)
    assert "ignored 1 empty row" in rep["notices"]
    # the probabilities are predict_proba of the resized image with and without descriptions
    x = torch.from_numpy(rep["image"].copy()).permute(2, 0, 1)[None].float() / 255
    classes, _ = icar.parse_classes(rows)
    p = icar.predict_proba(model, tok, x, classes, True)[0]
    assert np.allclose(rep["with_desc"], p.numpy(), atol=1e-4)
    scores, idx = icar.retrieve_captions(model, tok, x, caps, 3)
    assert rep["captions"] == [caps[i] for i in idx[0].tolist()]
    rep2 = demo_mod.zero_shot_report(model, tok, img, [["ring", "a zorblax"], ["star", ""]], k=1, captions=caps)
    assert any("zorblax" in n for n in rep2["notices"])
    with pytest.raises(ValueError, match="empty"):
        demo_mod.zero_shot_report(model, tok, img, [["", ""]], captions=caps)
    with pytest.raises(ValueError, match="duplicate"):
        demo_mod.zero_shot_report(model, tok, img, [["ring", ""], ["RING", "x"]], captions=caps)
    with pytest.raises(ValueError, match="ASCII"):
        demo_mod.zero_shot_report(model, tok, img, [["ring", "caf\u00e9"]], captions=caps)
    with pytest.raises(ValueError, match="between 1 and 50"):
        demo_mod.zero_shot_report(model, tok, img, [["ring", ""]], k=0, captions=caps)
    with pytest.raises(ValueError, match="^could not read the image"):
        demo_mod.zero_shot_report(model, tok, b"not an image", [["ring", ""]], captions=caps)


def test_rows_from_lines():
    from workbench.demos import icar as demo_mod

    assert demo_mod.rows_from_lines("star: five points\nring\n\n") == [["star", "five points"], ["ring", ""],
                                                                        ["", ""]]
    with pytest.raises(ValueError):
        demo_mod.rows_from_lines(None)


def test_app_predict_and_bad_inputs(demo):
    import gradio  # noqa: F401  (a dependency: fail loudly if missing)
    import pandas as pd

    from workbench.apps import icar as app
    from workbench.apps.common import guard
    from workbench.demos import icar as demo_mod

    rows = app.rows()
    example = demo_mod.example_names()[0]
    fig_p, fig_c, text = app.predict(example, None, pd.DataFrame(rows, columns=demo_mod.HEADERS))
    assert [t.name for t in fig_p.data] == ["name: description", "name only"]
    assert list(fig_p.data[0].x) == list(shapes.CLASSES)
    assert "| ring |" in text
    # the example image is the documented rendering
    ring = shapes.render("ring", "red", "large", "plain", seed=0, image_size=128)["image"]
    np.testing.assert_array_equal(demo_mod.example_image(example), ring)
    assert fig_p.to_json() == app.predict(None, ring, rows)[0].to_json()
    # editing one description changes its probability (and only the description-based series)
    edited = [list(r) for r in rows]
    edited[0][1] = "a shape with five sharp points"
    fig_e, _, _ = app.predict(example, None, edited)
    assert not np.allclose(fig_e.data[0].y, fig_p.data[0].y)
    assert np.allclose(fig_e.data[1].y, fig_p.data[1].y)
    # an upload wins over the example; a huge upload is resized (with a notice)
    big = np.zeros((3000, 3000, 3), np.uint8)
    fig_u, _, _ = app.predict(example, big, rows)
    assert len(fig_u.data[0].y) == 10 and not np.allclose(fig_u.data[0].y, fig_p.data[0].y)
    handler = guard(app.predict, 3)
    for args, msg in (((example, np.zeros((5,), np.uint8), rows), "could not read the image"),
                      ((example, None, pd.DataFrame({"name": [""], "description": [""]})), "empty"),
                      ((example, None, [["ring", "a"], ["ring", "b"]]), "duplicate"),
                      ((example, None, [["ring", "\u2605"]]), "ASCII"),
                      (("nope", None, rows), "unknown example"),
                      ((example, None, rows, 0), "captions")):
        out = handler(*args)
        assert out[:2] == (None, None) and out[2].startswith("⚠️ ") and msg in out[2], out
    assert app.rows("held-out") == demo_mod.default_class_rows(["ring", "pentagon", "crescent"])
    assert demo_mod.held_out() == ["ring", "pentagon", "crescent"]


def test_panel_quotes_the_checkpoints_numbers(demo):
    from workbench.demos import icar as demo_mod

    extra = demo_mod.bundle()[3]
    m = extra.get("metrics") or {}
    assert m, "the demo checkpoint records no metrics: run `workbench train icar-demo`"
    p = demo_mod.panel()
    assert f"**{m['zs_names']:.1%}**" in p.text and ", ".join(extra["held_out"]) in p.text


def test_missing_demo_checkpoint_tells_the_command(monkeypatch, tmp_path):
    from workbench import checkpoints
    from workbench.demos import common
    from workbench.demos import icar as demo_mod

    def drop():
        common.clear_cache(demo_mod.__name__)

    drop()
    monkeypatch.setattr(checkpoints, "DEMO_DIR", tmp_path)
    try:
        with pytest.raises(checkpoints.CheckpointError, match="workbench train icar-demo"):
            demo_mod.bundle()
    finally:
        drop()


def test_swin_v2_image_encoder_option(tok):
    """image_encoder="swin": the Swin V2 lite backbone (no head) gives the pooled features of its last stage."""
    torch.manual_seed(0)
    m = icar.ICARModel(icar.ICARConfig(method="icar", image_encoder="swin", image_size=64,
                                       vocab_size=len(tok))).eval()
    assert type(m.backbone).__name__ == "SwinTransformerV2" and m.backbone.num_classes == 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap = m.backbone.forward_features((x - 0.5) / 0.5)  # (B, C, H/32, W/32)
        assert torch.allclose(m.features(x), fmap.mean((2, 3)), atol=1e-5)
        p = icar.predict_proba(m, tok, x, CLASSES[:3])
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


def test_explorer_mirrors_the_app(demo):
    import ipywidgets  # noqa: F401  (a dependency: fail loudly if missing)

    from workbench.demos import icar as demo_mod
    from workbench.widgets.icar import icar_explorer, render_zero_shot

    model, tok, caps = demo
    lines = "\n".join(f"{n}: {d}" for n, d in demo_mod.default_class_rows())
    fig, html = render_zero_shot(shape="ring", classes_text=lines, k=3)
    img = shapes.render("ring", "red", "large", "plain", seed=0, image_size=128)["image"]
    rep = demo_mod.zero_shot_report(model, tok, img, demo_mod.default_class_rows(), k=3, captions=caps)
    assert list(fig.data[0].y) == rep["with_desc"] and list(fig.data[1].y) == rep["names_only"]
    assert html.count("<li>") == 3 and rep["captions"][0] in html
    ex = icar_explorer()
    assert list(ex.figure.data[0].x) == list(shapes.CLASSES)
    ex.controls["classes_text"].value = "ring: a round hole\nring: again"
    assert "duplicate class name" in ex.message.value


# ----------------------------------------------------------------------------------------- the study

def test_study_split_and_training_labels(tok):
    from workbench.studies import icar as st

    assert set(st.SEEN) | set(st.HELD_OUT) == set(shapes.CLASSES) and not set(st.SEEN) & set(st.HELD_OUT)
    d = shapes.generate(shapes.ShapesConfig(n=200, size=32, seed=5))
    ds = st.train_tensors(d, tok, 24)
    _, labels, caps, uid = ds.tensors
    for i in range(len(d)):
        name = shapes.CLASSES[int(d.labels[i])]
        assert int(labels[i]) == (st.SEEN.index(name) if name in st.SEEN else -1)  # held out: never a label
        assert tok.decode(caps[i]) == d.captions[i].lower()
        assert (uid == uid[i]).sum() == d.captions.count(d.captions[i])  # same caption <=> same id
