"""Swin V2 demo: the committed shapes classifier, its continuous position bias, and V1's table beside it.

Used by the "Swin V2" app tab, the explorer of notebook 01 and the tests. The model is
``swinv2_micro_window4_64`` trained by ``workbench train swinv2-demo`` on single-object 64 px shapes; it
expects ImageNet-normalised inputs.
"""
from __future__ import annotations

import numpy as np
import torch

from workbench import swin_v2
from workbench.checkpoints import load_demo, load_into
from workbench.data import shapes
from workbench.data.transforms import normalize, to_tensor
from workbench.demos.common import Panel, cached, check_int, read_image, sample_image

CHECKPOINT = "swinv2_micro_shapes64"
COMMAND = "workbench train swinv2-demo --save-demo"
MAX_WINDOW = 24


@cached
def model():
    """``(model in eval mode, {parameter name: V1 table}, info)``; ``info`` holds the test accuracy."""
    ck = load_demo(CHECKPOINT, COMMAND)
    cfg = dict(ck.meta.get("config", {}))
    cfg.pop("name", None)
    net = swin_v2.SwinTransformerV2(swin_v2.SwinConfig(**cfg))
    load_into(net, ck)
    tables = {k: v.float() for k, v in ck.extra.get("v1_tables", {}).items()}
    info = {k: ck.extra.get(k) for k in ("test_accuracy", "n_test", "table_test_accuracy")}
    return net.eval(), tables, info


def heads(layer: int) -> int:
    """Heads of stage ``layer`` (the head control's range follows the layer)."""
    net, _, _ = model()
    return swin_v2.attention_module(net, check_int("layer", layer, 0, len(net.layers) - 1), 0).num_heads


def bias_panel(layer: int = 0, block: int = 0, head: int = 0, window: int = 8, pretrained_window: int = 4,
               qy: int = 3, qx: int = 3) -> Panel:
    """The CPB bias of one attention module over the offsets of any window, one query's bias over the window,
    and the V1 table of the same layer (trained alongside) bicubically resized to that window."""
    from workbench.viz import swin_v2 as vz

    net, tables, _ = model()
    layer = check_int("layer", layer, 0, len(net.layers) - 1)
    block = check_int("block", block, 0, len(net.layers[layer].blocks) - 1)
    attn = swin_v2.attention_module(net, layer, block)
    head = check_int(f"head (stage {layer} has {attn.num_heads})", head, 0, attn.num_heads - 1)
    window = check_int("window", window, 2, MAX_WINDOW)
    pretrained_window = check_int("pretrained window", pretrained_window, 0, MAX_WINDOW)
    qy = min(check_int("query row", qy, 0, MAX_WINDOW - 1), window - 1)
    qx = min(check_int("query column", qx, 0, MAX_WINDOW - 1), window - 1)
    cpb = swin_v2.bias_over_offsets(attn, window, pretrained_window)[head]
    q = swin_v2.query_bias(cpb, qy, qx)
    figs = {
        # coloured over its own range (the bound (0, 16) would leave a trained bias of ~0.5-2.5 one flat colour)
        "cpb": vz.offset_bias_heatmap(cpb, title=f"CPB: 16·sigmoid(MLP), stage {layer}, block {block}, head {head}<br>"
                                                 f"window {window}, pretrained {pretrained_window or window}"),
        "query": vz.query_bias_figure(q, (qy, qx), title=f"bias of query ({qy}, {qx})<br>over the {window}x{window} window"),
    }
    key = f"layers.{layer}.blocks.{block}.attn.relative_position_bias_table"
    if key in tables:
        t = swin_v2.table_over_offsets(tables[key], window)[head]
        src = (int(round(float(np.sqrt(tables[key].shape[0])))) + 1) // 2
        figs["v1"] = vz.offset_bias_heatmap(t, title=f"V1 table ({src}x{src} window trained),<br>bicubic to window {window}")
    text = (f"CPB bias from {float(cpb.min()):.2f} to {float(cpb.max()):.2f}. The MLP saw window "
            f"{attn.window_size} in training (pretrained window {attn.pretrained_window_size or attn.window_size}); "
            f"at window {window} the log-spaced coordinates reach "
            f"{_max_coord(window, pretrained_window or window):.2f} (training range ±1).")
    return Panel(figs, text, values={"cpb": cpb, "query": q})


def coordinate_mapping(pretrained_window: int = 4, windows=(4, 8, 16)):
    """The CPB's input coordinates along Δx (Δy = 0), log- and linear-spaced, for several windows: a figure
    showing how far a larger window leaves the range the MLP saw in training."""
    from workbench.viz import swin_v2 as vz

    curves = {}
    for M in windows:
        for mode in ("log", "linear"):
            t = swin_v2.relative_coords_table(M, pretrained_window, mode)[0, M - 1, :, 1].numpy()
            curves[f"{mode}, window {M}"] = (list(range(-(M - 1), M)), t)
    return vz.coordinate_mapping_figure(curves, pretrained_window)


def _max_coord(window: int, pretrained: int) -> float:
    return float(swin_v2.relative_coords_table(window, pretrained, "log").abs().max())


def sample(shape: str = "star", seed: int = 0, color: str = "red", size: str = "large",
           background: str = "striped") -> np.ndarray:
    """A shapes sample at the model's input size (what the app's picker shows)."""
    net, _, _ = model()
    return sample_image(shape, seed, color, size, background, image_size=net.img_size)


def classify(image) -> Panel:
    """Top-5 of the demo classifier for an image (uint8 array, path, upload), resized to its input size."""
    from workbench.viz import swin_v2 as vz

    net, _, info = model()
    arr, notices = read_image(image, size=net.img_size)
    x = to_tensor(arr)
    with torch.no_grad():
        p = net(normalize(x)[None]).softmax(-1)[0]
    vals, idx = p.topk(5)
    pairs = [(shapes.CLASSES[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]
    acc = info.get("test_accuracy")
    acc_txt = f" The model is right on {acc:.1%} of {info.get('n_test')} unseen shapes." if acc is not None else ""
    fig = vz.topk_figure(pairs, title=f"top-5 of the demo classifier ({net.img_size} px)")
    return Panel({"top5": fig}, f"**{pairs[0][0]}** ({pairs[0][1]:.0%}).{acc_txt}", notices,
                 values={"pairs": pairs, "image": arr})
