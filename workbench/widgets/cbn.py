"""The notebook twin of the "CBN statistics" app tab: replay the recorded diagnostic run or train a short
live one, then look at one channel's current / naive / compensated / true statistics."""
from __future__ import annotations

import functools
import html as _html

from .core import Explorer, explorer


@functools.lru_cache(maxsize=8)   # the explorer's memory of its last live runs: a new channel only redraws
def _live(batch_size: int, window: int, rho: float, burnin: int, steps: int, layer: str,
          stat_batch: int | None = None) -> dict:
    from ..demos import cbn as demo

    return demo.live_record(batch_size, window, rho, burnin, steps, layer, stat_batch)


def render_cbn(source: str = "recorded", batch_size: int = 32, window: int = 4, rho: float = 1.0, burnin: int = 20,
               steps: int = 80, layer: str = "blocks.1.conv1", channel: int = 0, diag: dict | None = None,
               stat_batch: str | int | None = "1"):
    """(trajectories figure, summary HTML) of ``workbench.demos.cbn.panel`` for the recorded run (``diag`` or the
    committed one) or a live run; ``stat_batch``: images per statistics group ("whole batch" or None: the batch)."""
    from ..demos import cbn as demo

    if source == "recorded":
        if diag is None:
            diag = demo.recorded()
    elif source == "live":
        diag = _live(int(batch_size), int(window), float(rho), int(burnin), int(steps), layer,
                     demo.parse_stat_batch(stat_batch))
    else:
        raise ValueError(f"source must be 'recorded' or 'live', got {source!r}")
    p = demo.panel(diag, channel)
    lines = [ln for ln in p.text.splitlines() if ln and not ln.startswith("|---")]
    head, rows = lines[0], [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    table = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{_html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows)
    html = f"<div>{_html.escape(head).replace('**', '')}</div><table>{table}</table>"
    return p.figures["trajectories"], html


def cbn_explorer(diag: dict | None = None) -> Explorer:
    """Controls mirroring the app tab; the recorded run is shown first, 'live' trains on demand."""
    import ipywidgets as W

    from ..demos import cbn as demo

    controls = {
        "source": W.ToggleButtons(options=["recorded", "live"], value="recorded", description="run"),
        "batch_size": W.IntSlider(value=32, min=2, max=64, description="batch"),
        "stat_batch": W.Dropdown(options=demo.stat_batch_choices(32), value="1", description="stats group"),
        "window": W.IntSlider(value=4, min=2, max=16, description="window k"),
        "rho": W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description="ρ"),
        "burnin": W.IntSlider(value=20, min=0, max=300, description="burn-in"),
        "steps": W.IntSlider(value=80, min=10, max=400, step=10, description="live steps"),
        "layer": W.Dropdown(options=list(demo.LAYERS), value="blocks.1.conv1", description="layer"),
        "channel": W.IntSlider(value=0, min=0, max=demo.channels("blocks.1.conv1") - 1, description="channel"),
    }

    def follow_layer(change):   # the channel slider follows the layer, as in the app
        controls["channel"].max = demo.channels(change["new"]) - 1

    def follow_batch(change):   # statistics groups that divide the batch, as in the app
        keep = controls["stat_batch"].value
        opts = demo.stat_batch_choices(change["new"])
        controls["stat_batch"].options = opts
        controls["stat_batch"].value = keep if keep in opts else opts[0]

    controls["layer"].observe(follow_layer, names="value")
    controls["batch_size"].observe(follow_batch, names="value")
    return explorer(controls, functools.partial(render_cbn, diag=diag), title="CBN statistics explorer")
