"""The demo layer (``workbench.demos``) and the app glue every tab shares (``workbench.apps.common``).

* ``demos.common``: ``read_image`` turns unreadable uploads into one short message without paths; ``cached``
  builds a model once under concurrent first calls; the control checks.
* ``apps.common``: ``guard(fn, n)`` clears a tab's outputs and reports a user error on its status line;
  ``upload_image`` never fails inside gradio.
* every paper's demo module: panel functions return the documented figures and text, controls out of range give
  a short ``ValueError`` naming the control, and the constraint helpers (``swin_v2.heads``,
  ``simmim.mask_patches``, ``cbn.channels``) agree with the models.

The numbers inside the panels are checked against independent computations in the paper test files
(``test_swin_v2.py``, ``test_simmim.py``, ...). MoBY and DNL panels run here on random-initialised stand-ins of the
demo models (their checkpoints are being retrained), so this file checks the demo logic, not the weights.
"""
from __future__ import annotations

import io
import logging
import threading
import time

import numpy as np
import pytest
import torch

from workbench.demos import common

torch.set_num_threads(1)


def short(msg: str) -> bool:
    """A message for a status line: one line, no traceback, no file-system path, at most 200 characters."""
    return "\n" not in msg and "Traceback" not in msg and len(msg) <= 200


# ------------------------------------------------------------------------------------------------ read_image
def _png_bytes(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def bad_files(tmp_path):
    """Four unreadable "images" in a folder whose name must never reach the user."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "private-upload-folder"
    folder.mkdir()
    png = _png_bytes(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8))
    jpeg = _jpeg_bytes(rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8))
    files = {
        # a valid PNG signature and IHDR chunk, then garbage instead of the image data
        "corrupt.png": png[:33] + bytes(rng.integers(0, 256, size=400, dtype=np.uint8)),
        "text.png": b"This is a text file that was renamed to .png\n" * 3,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.png": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("name", ["corrupt.png", "text.png", "truncated.jpg", "empty.png"])
@pytest.mark.parametrize("form", ["path", "gradio dict"])
def test_read_image_refuses_unreadable_files_without_paths(bad_files, name, form):
    path = str(bad_files / name)
    value = path if form == "path" else {"path": path, "orig_name": name}
    with pytest.raises(ValueError) as info:
        common.read_image(value, size=64)
    msg = str(info.value)
    assert msg.startswith("could not read the image"), msg
    assert "/" not in msg and bad_files.name not in msg, msg
    assert short(msg)


def test_read_image_refuses_truncated_jpeg_also_after_gradio_is_imported(bad_files):
    """gradio (or another library) must not have switched PIL to silently decode truncated files."""
    import gradio  # noqa: F401

    with pytest.raises(ValueError, match="^could not read the image"):
        common.read_image(str(bad_files / "truncated.jpg"))


def test_read_image_other_failures(tmp_path):
    with pytest.raises(ValueError, match="Please choose or upload an image first"):
        common.read_image(None)
    with pytest.raises(ValueError, match="Please choose or upload an image first"):
        common.read_image("")
    with pytest.raises(ValueError) as info:
        common.read_image(str(tmp_path / "no" / "such" / "file.png"))
    assert str(info.value).startswith("could not read the image") and "/" not in str(info.value)
    with pytest.raises(ValueError, match="^could not read the image"):
        common.read_image(b"not an image at all")
    with pytest.raises(ValueError, match="^could not read the image"):
        common.read_image(np.zeros((5,), np.uint8))
    with pytest.raises(ValueError, match="^could not read the image"):
        common.read_image(np.full((8, 8, 3), np.nan))


def test_read_image_converts_and_resizes_with_notices(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(50, 90, 4), dtype=np.uint8)
    p = tmp_path / "a.png"
    p.write_bytes(_png_bytes(rgba))
    arr, notices = common.read_image(str(p), size=64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert any("transparency" in n for n in notices) and any("90x50" in n and "64x64" in n for n in notices)
    # the centre square of the flattened image, resized: compare with PIL doing the same by hand
    from PIL import Image

    flat = Image.open(p).convert("RGBA")
    bg = Image.new("RGB", flat.size, (255, 255, 255))
    bg.paste(flat, mask=flat.split()[-1])
    ref = np.asarray(bg.crop((20, 0, 70, 50)).resize((64, 64), Image.BICUBIC))
    assert np.abs(arr.astype(int) - ref.astype(int)).max() <= 1
    same, notes = common.read_image(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8), size=64)
    assert same.shape == (64, 64, 3) and notes == []
    grey, notes = common.read_image(np.zeros((64, 64), np.uint8))
    assert grey.shape == (64, 64, 3) and any("grayscale" in n for n in notes)


@pytest.mark.parametrize("name", ["corrupt.png", "text.png", "truncated.jpg"])
def test_upload_component_never_raises_and_read_image_explains(bad_files, name):
    """gradio's own image decoding fails on these files: the component passes a BadUpload to the handler, whose
    read_image gives the tab's message (no traceback, no path)."""
    from gradio.data_classes import ImageData

    from workbench.apps.common import upload_image
    from workbench.apps.upload import BadUpload

    comp = upload_image()
    value = comp.preprocess(ImageData(path=str(bad_files / name), orig_name=name))
    if isinstance(value, BadUpload):
        assert "/" not in value
    with pytest.raises(ValueError) as info:
        common.read_image(value, size=64)
    msg = str(info.value)
    assert msg.startswith("could not read the image") and "/" not in msg and short(msg)


def test_upload_component_passes_good_images_through(tmp_path):
    from gradio.data_classes import ImageData

    from workbench.apps.common import upload_image
    from workbench.apps.upload import BadUpload

    img = np.random.default_rng(2).integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    p = tmp_path / "ok.png"
    p.write_bytes(_png_bytes(img))
    value = upload_image().preprocess(ImageData(path=str(p), orig_name="ok.png"))
    assert not isinstance(value, BadUpload)
    arr, _ = common.read_image(value)
    np.testing.assert_array_equal(arr, img)
    assert upload_image().preprocess(None) is None


# ------------------------------------------------------------------------------------------------ guard
def test_guard_clears_outputs_and_reports_on_the_status_line(caplog):
    from workbench.apps.common import guard
    from workbench.checkpoints import CheckpointError

    def handler(x):
        if x == "bad":
            raise ValueError("the value in /home/someone/secret/file.png is bad")
        if x == "bug":
            raise RuntimeError("a real bug")
        if isinstance(x, type):
            raise x("user problem")
        return "figure", "plot", "ok"

    g = guard(handler, 3)
    assert g("fine") == ("figure", "plot", "ok")
    with caplog.at_level(logging.WARNING, logger="workbench.apps"):
        out = g("bad")
    assert out[:2] == (None, None) and out[2].startswith("⚠️ ") and "is bad" in out[2]
    assert "/home" not in out[2] and "secret" not in out[2]
    logged = [r for r in caplog.records if r.name == "workbench.apps"]
    assert len(logged) == 1 and "is bad" in logged[0].getMessage() and "\n" not in logged[0].getMessage()
    for exc in (FileNotFoundError, KeyError, IndexError, CheckpointError):
        res = g(exc)
        assert res[:2] == (None, None) and res[2] == "⚠️ user problem", (exc, res)
    with pytest.raises(RuntimeError, match="a real bug"):
        g("bug")
    one = guard(lambda: (_ for _ in ()).throw(ValueError("only a status")), 1)
    assert one() == "⚠️ only a status"
    import inspect as pyinspect

    assert pyinspect.signature(g) == pyinspect.signature(handler) and g.__name__ == "handler"


def test_guard_streams_and_raises_gr_error_without_n_outputs():
    import gradio as gr

    from workbench.apps.common import guard

    def stream(n):
        yield 1, "first"
        raise ValueError("stream broke")

    assert list(guard(stream, 2)(1)) == [(1, "first"), (None, "⚠️ stream broke")]
    it = guard(stream)(1)
    assert next(it) == (1, "first")
    with pytest.raises(gr.Error, match="stream broke"):
        next(it)
    with pytest.raises(gr.Error, match="x must be >= 0"):
        guard(lambda x: (_ for _ in ()).throw(ValueError("x must be >= 0")))(1)


# ------------------------------------------------------------------------------------------------ cached and checks
def test_cached_builds_once_under_concurrent_first_calls():
    calls = []

    @common.cached
    def load(name, scale=1):
        calls.append((name, scale))
        time.sleep(0.05)
        return object()

    n = 12
    barrier = threading.Barrier(n)
    got = [None] * n

    def work(i):
        barrier.wait(timeout=30)
        got[i] = load("a") if i % 2 else load("b", scale=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(calls) == [("a", 1), ("b", 2)]
    assert all(g is got[1] for g in got[1::2]) and all(g is got[0] for g in got[0::2]) and got[0] is not got[1]
    load.cache_clear()
    assert load("a") is not got[1] and len(calls) == 3


@pytest.mark.parametrize("call,match", [
    (lambda: common.check_int("seed", -1, 0, 10), "seed must be a whole number between 0 and 10"),
    (lambda: common.check_int("seed", 1.5, 0, 10), "seed"),
    (lambda: common.check_int("seed", "x", 0, 10), "seed must be a whole number"),
    (lambda: common.check_int("seed", float("nan"), 0, 10), "seed"),
    (lambda: common.check_float("rho", float("inf"), 0, 2), r"rho must be in \[0, 2\]"),
    (lambda: common.check_float("ratio", 0.0, 0, 1, open_lo=True), r"ratio must be in \(0, 1\]"),
    (lambda: common.check_choice("gallery", "mnist", ("shapes", "digits")), "gallery must be one of"),
])
def test_control_checks_give_short_messages(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert short(str(info.value))


def test_control_checks_accept_whole_floats_and_numeric_strings():
    assert common.check_int("k", 3.0, 1, 5) == 3 and common.check_int("k", "4", 1, 5) == 4
    assert common.check_float("t", "0.5", 0, 1) == 0.5
    assert common.check_choice("c", "a", ["a", "b"]) == "a"


# ------------------------------------------------------------------------------------------------ Swin V2
def test_swin_v2_heads_follow_the_model():
    from workbench import swin_v2
    from workbench.demos import swin_v2 as demo

    net, _, _ = demo.model()
    for layer in range(len(net.layers)):
        for block in range(len(net.layers[layer].blocks)):
            assert demo.heads(layer) == swin_v2.attention_module(net, layer, block).num_heads
        assert demo.heads(layer) == net.cfg.num_heads[layer]
    with pytest.raises(ValueError, match="layer"):
        demo.heads(len(net.layers))


def test_swin_v2_panels_return_the_documented_figures():
    from workbench.demos import swin_v2 as demo

    p = demo.bias_panel(1, 1, 1, 6, 4, 2, 5)
    assert list(p.figures) == ["cpb", "query", "v1"]
    assert p.values["cpb"].shape == (11, 11) and p.values["query"].shape == (6, 6)
    assert f"{float(p.values['cpb'].min()):.2f}" in p.text and f"{float(p.values['cpb'].max()):.2f}" in p.text
    assert np.allclose(np.asarray(p.figures["cpb"].data[0].z, dtype=float), p.values["cpb"].numpy(), atol=1e-6)
    assert "window 6" in p.figures["cpb"].layout.title.text
    c = demo.classify(demo.sample("ring", 1))
    assert list(c.figures) == ["top5"] and len(c.values["pairs"]) == 5 and c.notices == []
    assert c.text.startswith(f"**{c.values['pairs'][0][0]}**")
    fig = demo.coordinate_mapping(4, (4, 8))
    assert len(fig.data) >= 4


@pytest.mark.parametrize("kw,match", [
    (dict(layer=4), "layer"), (dict(layer=1.5), "layer"), (dict(layer="x"), "layer"), (dict(block=2), "block"),
    (dict(head=1), "head"), (dict(layer=3, head=8), "head"), (dict(window=1), "window"), (dict(window=25), "window"),
    (dict(window=float("nan")), "window"), (dict(pretrained_window=-1), "pretrained window"),
    (dict(qy=-1), "query row"), (dict(qx=24), "query column"),
])
def test_swin_v2_bias_controls_out_of_range(kw, match):
    from workbench.demos import swin_v2 as demo

    with pytest.raises(ValueError, match=match) as info:
        demo.bias_panel(**kw)
    assert short(str(info.value))


def test_swin_v2_classify_and_sample_bad_inputs(bad_files):
    from workbench.demos import swin_v2 as demo

    with pytest.raises(ValueError, match="Please choose or upload an image first"):
        demo.classify(None)
    with pytest.raises(ValueError, match="^could not read the image"):
        demo.classify(str(bad_files / "text.png"))
    with pytest.raises(ValueError, match="seed"):
        demo.sample("star", -1)
    with pytest.raises(ValueError):
        demo.sample("dodecahedron", 0)


# ------------------------------------------------------------------------------------------------ SimMIM
@pytest.mark.parametrize("label", ["Swin V2 lite (SimMIM)", "ViT lite (SimMIM)"])
def test_simmim_mask_patches_follow_the_model(label):
    from workbench.demos import simmim as demo

    if label not in demo.available_models():
        pytest.fail(f"{label}: checkpoint missing; run `{demo.MODELS[label][2]}`")
    net, _ = demo.model(label)
    allowed = demo.mask_patches(label)
    assert allowed == [p for p in (4, 8, 16, 32) if p % net.patch_size == 0]
    assert (allowed == [4, 8, 16, 32]) == (net.patch_size == 4) and (allowed == [8, 16, 32]) == (net.patch_size == 8)
    for p in allowed:   # every allowed choice reconstructs
        rec = demo.reconstruct(demo.image("shapes scene")[0], "random", 0.5, p, 0, label)
        assert rec.token_mask.shape == (64 // net.patch_size,) * 2
    rejected = [p for p in demo.MASK_PATCHES if p not in allowed]
    for p in rejected:
        with pytest.raises(ValueError, match="mask patch"):
            demo.reconstruct(demo.image("shapes scene")[0], "random", 0.5, p, 0, label)


def test_simmim_panel_returns_the_documented_figures():
    from workbench.demos import simmim as demo

    p = demo.panel("shapes scene", "random", 0.6, 16, 0)
    assert list(p.figures) == ["reconstruction", "error"]
    assert "160/256" in p.text and "AvgDist" in p.text and "biharmonic" in p.text
    assert p.figures["reconstruction"].data[0].type == "image"
    assert {"rec", "l1", "biharmonic", "mean_fill"} <= set(p.values)


@pytest.mark.parametrize("kw,match", [
    (dict(mask_ratio=0.0), "mask ratio"), (dict(mask_ratio=1.0), "mask ratio"),
    (dict(mask_ratio=float("nan")), "mask ratio"), (dict(mask_ratio="lots"), "mask ratio"),
    (dict(mask_patch_size=12), "mask patch"), (dict(mask_patch_size=64), "mask patch"),
    (dict(mask_patch_size=4, label="ViT lite (SimMIM)"), "mask patch"),
    (dict(strategy="zigzag"), "masking strategy"), (dict(seed=-1), "seed"), (dict(seed=0.5), "seed"),
    (dict(source="video: cat"), "image source"), (dict(source="photo: nowhere"), "unknown photo"),
    (dict(source="shapes: dodecahedron"), "shape"),
    (dict(source="upload"), "upload"), (dict(label="ResNet"), "model"),
])
def test_simmim_controls_out_of_range(kw, match):
    from workbench.demos import simmim as demo

    with pytest.raises(ValueError, match=match) as info:
        demo.panel(**kw)
    assert short(str(info.value))


def test_simmim_upload_source(bad_files, tmp_path):
    from workbench.demos import simmim as demo

    p = tmp_path / "u.png"
    p.write_bytes(_png_bytes(np.random.default_rng(3).integers(0, 256, size=(50, 90, 4), dtype=np.uint8)))
    out = demo.panel("upload", upload=str(p))
    assert any("centre square" in n for n in out.notices)
    with pytest.raises(ValueError, match="^could not read the image"):
        demo.panel("upload", upload=str(bad_files / "corrupt.png"))


# ------------------------------------------------------------------------------------------------ CBN
def test_cbn_channels_follow_the_model():
    from workbench import cbn
    from workbench.demos import cbn as demo

    model = cbn.make_model("cbn", window=4, in_chans=3, widths=demo.WIDTHS, seed=0)
    layers = dict(cbn.cbn_layers(model))
    for layer in demo.LAYERS:
        assert layer in layers, layer
        assert demo.channels(layer) == layers[layer].conv.out_channels
    with pytest.raises(ValueError, match="layer"):
        demo.channels("fc")


def _tiny_dataset():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)


def test_cbn_panel_returns_the_documented_figures():
    from workbench.demos import cbn as demo

    cfg = demo.DiagnosticConfig(batch_size=2, window=3, steps=12, every=6, layer="stem")
    *_, last = demo.diagnostic_run(cfg, _tiny_dataset())
    diag = demo.diagnostic_series(last, cfg)
    p = demo.panel(diag, 1)
    assert list(p.figures) == ["trajectories", "errors", "loss"] and p.values["diag"] is diag
    assert "compensated" in p.text or "comp" in p.text


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=1), "batch size"), (dict(batch_size=65), "batch size"), (dict(batch_size="x"), "batch size"),
    (dict(window=1), "window"), (dict(window=17), "window"), (dict(rho=float("nan")), "rho"), (dict(rho=-0.5), "rho"),
    (dict(burnin=-1), "burn-in"), (dict(steps=10**6), "steps"), (dict(steps=5), "steps"), (dict(layer="fc"), "layer"),
])
def test_cbn_live_controls_out_of_range(kw, match):
    from workbench.demos import cbn as demo

    args = dict(batch_size=2, window=3, rho=1.0, burnin=0, steps=10, layer="stem", channel=0) | kw
    with pytest.raises(ValueError, match=match) as info:
        next(demo.live(**args))
    assert short(str(info.value))


def test_cbn_panel_bad_inputs():
    from workbench.demos import cbn as demo

    with pytest.raises(ValueError, match="Nothing to show"):
        demo.panel({}, 0)
    cfg = demo.DiagnosticConfig(batch_size=2, window=3, steps=10, every=10, layer="stem")
    *_, last = demo.diagnostic_run(cfg, _tiny_dataset())
    diag = demo.diagnostic_series(last, cfg)
    with pytest.raises(ValueError, match="channel") as info:
        demo.panel(diag, demo.channels("stem"))
    assert short(str(info.value))


# ------------------------------------------------------------------------------------------------ iCAR
def test_icar_panel_returns_the_documented_figures():
    from workbench.data import shapes
    from workbench.demos import icar as demo

    p = demo.panel(demo.example_names()[0], k=3)
    assert list(p.figures) == ["probabilities", "captions"]
    assert p.values["names"] == list(shapes.CLASSES) and len(p.values["captions"]) == 3
    assert "| class |" in p.text and all(n in p.text for n in shapes.CLASSES)
    held = demo.held_out()
    assert held and set(held) <= set(shapes.CLASSES)


@pytest.mark.parametrize("kw,match", [
    (dict(example="nope"), "unknown example"), (dict(k=0), "captions"), (dict(k=11), "captions"),
    (dict(table=[["", ""]]), "empty"), (dict(table=[["ring", "a"], ["RING", "b"]]), "duplicate"),
    (dict(table=[["ring", "caf\u00e9"]]), "ASCII"), (dict(upload=b"not an image"), "^could not read the image"),
    (dict(upload=np.zeros((5,), np.uint8)), "^could not read the image"),
])
def test_icar_controls_out_of_range(kw, match):
    from workbench.demos import icar as demo

    with pytest.raises(ValueError, match=match) as info:
        demo.panel(**kw)
    assert short(str(info.value))


# ------------------------------------------------------------------------------------------------ MoBY (stand-in)
def _drop_cache(module_name: str) -> None:
    common.clear_cache(module_name)


@pytest.fixture
def moby_standin(monkeypatch):
    """A random-initialised encoder of the demo's architecture in place of the committed one; the module's cached
    galleries, indices and maps are dropped before and after, so nothing leaks into tests of the real one."""
    from workbench import moby as mb
    from workbench.demos import moby as demo

    _drop_cache(demo.__name__)
    torch.manual_seed(0)
    enc = mb.create_encoder("swinv2_micro_window4_64", 0.0).eval()
    monkeypatch.setattr(demo, "encoder", lambda: (enc, {"knn": None}))
    monkeypatch.setattr(demo, "N", 60)
    yield enc
    _drop_cache(demo.__name__)


def test_moby_panels_return_the_documented_figures(moby_standin):
    from workbench.demos import moby as demo

    p = demo.map_panel("shapes", "pca", 3, 5)
    assert list(p.figures) == ["map", "neighbours"]
    assert len(p.values["indices"]) == 5 and 3 not in p.values["indices"]
    assert p.text.startswith("nearest: #")
    img = demo.index("shapes")["images"][7]
    u = demo.upload_panel("shapes", np.array(img), 4)
    assert list(u.figures) == ["neighbours"] and u.values["indices"][0] == 7   # the image finds itself
    v = demo.views_panel("shapes #1", 3)
    assert list(v.figures) == ["views"] and "views" in v.text
    photo = demo.views_panel(demo.view_sources()[4], 0)
    assert list(photo.figures) == ["views"]


def test_moby_point_range_follows_the_gallery(moby_standin):
    from workbench.demos import moby as demo

    n = len(demo.index("shapes")["labels"])
    assert n == demo.N == len(demo.gallery("shapes")[0])
    demo.neighbours("shapes", point=n - 1, k=3)
    with pytest.raises(ValueError, match="point number"):
        demo.neighbours("shapes", point=n, k=3)


@pytest.mark.parametrize("call,match", [
    (lambda d: d.map_panel("shapes", "pca", 10_000), "point number"),
    (lambda d: d.map_panel("shapes", "pca", -1), "point number"),
    (lambda d: d.map_panel("shapes", "pca", None), "point number"),
    (lambda d: d.map_panel("shapes", "pca", 0, 99), "number of neighbours"),
    (lambda d: d.map_panel("mnist", "pca", 0), "gallery"),
    (lambda d: d.map_panel("shapes", "umap", 0), "projection"),
    (lambda d: d.upload_panel("shapes", None), "Please choose or upload"),
    (lambda d: d.upload_panel("shapes", b"not an image"), "^could not read the image"),
    (lambda d: d.views_panel("no-such-photo", 0), "unknown image source"),
    (lambda d: d.views_panel("shapes #9", 0), "shapes index"),
    (lambda d: d.views_panel("shapes #0", -1), "seed"),
])
def test_moby_controls_out_of_range(moby_standin, call, match):
    from workbench.demos import moby as demo

    with pytest.raises(ValueError, match=match) as info:
        call(demo)
    assert short(str(info.value))


# ------------------------------------------------------------------------------------------------ DNL (stand-in)
@pytest.fixture
def dnl_standin(monkeypatch):
    """Random-initialised SegNets with NL / DNL heads in place of the committed ones."""
    from workbench import dnl
    from workbench.demos import dnl as demo

    _drop_cache(demo.__name__)
    nets = {}
    for i, head in enumerate(demo.HEADS):
        torch.manual_seed(i)
        nets[head] = dnl.SegNet(dnl.SegNetConfig(head=head)).eval()
        if head == "dnl":
            nets[head].block.temperature = 0.05
    monkeypatch.setattr(demo, "model", lambda head: nets[head])
    yield nets
    _drop_cache(demo.__name__)


def test_dnl_panel_returns_the_documented_figures(dnl_standin):
    from workbench.demos import dnl as demo

    p = demo.panel("shapes scene", 0, 0.05, (44, 46))
    assert list(p.figures) == ["attention", "segmentation", "overview"]
    assert p.values["click_image"].shape == (256, 256, 3)
    exp = p.values["exploration"]
    assert set(exp.maps) == {"NL attention", "NL implicit unary", "DNL pairwise", "DNL unary"}
    assert exp.query == (44, 46) and exp.mask is not None and exp.stats is not None
    assert "44" in p.text and "46" in p.text
    assert demo.click_to_query([64, 128]) == (32, 16) and demo.click_to_query(None, (1, 2)) == (1, 2)
    assert demo.click_to_query([10_000, -5]) == (0, 63)


@pytest.mark.parametrize("kw,match", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=-1), "temperature"), (dict(query=(64, 0)), "outside"), (dict(query=(-1, 3)), "outside"),
    (dict(query=("a", 1)), "query"), (dict(query=(float("nan"), 1)), "query"),
    (dict(source="photo: nowhere"), "unknown photo"), (dict(source="video"), "image source"),
    (dict(source="upload"), "upload"), (dict(seed=-1), "seed"),
])
def test_dnl_controls_out_of_range(dnl_standin, kw, match):
    from workbench.demos import dnl as demo

    with pytest.raises(ValueError, match=match) as info:
        demo.panel(**kw)
    assert short(str(info.value))


def test_dnl_upload_source(dnl_standin, bad_files):
    from workbench.demos import dnl as demo

    with pytest.raises(ValueError, match="^could not read the image"):
        demo.panel("upload", upload=str(bad_files / "text.png"))
    p = demo.panel("upload", upload=np.full((80, 120, 3), 200, np.uint8))
    assert p.values["exploration"].mask is None and any("centre square" in n for n in p.notices)
