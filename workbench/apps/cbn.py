"""App tab "CBN statistics": how well do past iterations' statistics, moved to today's weights by a
Taylor step, match the truth?

Replay the committed diagnostic run (``studies/cbn/diagnostic.json``) or train a small ResNet live on
digits with the chosen batch size, window, ρ and burn-in; streamed updates show, for one channel of one
layer, the current-batch, naive-window, compensated-window and true statistics, the compensation errors
and the loss. Thin: ``workbench.cbn`` trains and measures, ``workbench.viz.cbn`` draws.
Run alone with ``workbench app --tab cbn``.
"""
from __future__ import annotations

import math

from workbench.apps.common import guard, launch

LAYERS = ("stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "blocks.1.shortcut.0")
LIMITS = dict(batch_size=(2, 64), window=(2, 16), rho=(0.0, 2.0), burnin=(0, 300), steps=(10, 400), channel=(0, 31))
DEFAULTS = dict(batch_size=4, window=4, rho=1.0, burnin=0, steps=120, layer="blocks.0.conv1", channel=0)


def _int(name: str, v) -> int:
    lo, hi = LIMITS[name]
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name.replace('_', ' ')} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
        raise ValueError(f"{name.replace('_', ' ')} must be a whole number in [{lo}, {hi}], got {v!r}")
    return int(f)


def _float(name: str, v) -> float:
    lo, hi = LIMITS[name]
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v!r}")
    return f


def render(diag: dict, channel):
    """(trajectories, errors, loss, summary) figures/markdown of a diagnostic record for one channel."""
    from workbench.viz import cbn as vz

    if not diag:
        raise ValueError("Nothing to show yet: replay the recorded run or start a live one.")
    c = _int("channel", channel)
    n = vz.num_channels(diag)
    if c >= n:
        raise ValueError(f"layer {diag['config'].get('layer')} has {n} channels: choose a channel in [0, {n - 1}]")
    return (vz.trajectories_figure(diag, c), vz.error_figure(diag), vz.loss_figure(diag["loss"]),
            vz.diagnostic_summary(diag))


def replay(channel):
    """Load the committed diagnostic run and render it."""
    from workbench.studies import cbn as st

    diag = st.load_diagnostic()
    return (*render(diag, channel), diag)


def live(batch_size, window, rho, burnin, steps, layer, channel):
    """Train live; yield (trajectories, errors, loss, summary, state) every few steps."""
    from workbench import cbn

    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {', '.join(LAYERS)}")
    n_steps = _int("steps", steps)
    cfg = cbn.DiagnosticConfig(batch_size=_int("batch_size", batch_size), window=_int("window", window),
                               rho=_float("rho", rho), burnin=_int("burnin", burnin), steps=n_steps, layer=layer,
                               every=max(5, n_steps // 8))
    c = _int("channel", channel)
    cfg.validate()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for res in cbn.diagnostic_run(cfg):
            diag = cbn.diagnostic_series(res, cfg)
            yield (*render(diag, min(c, len(diag["mu_cur"][0]) - 1)), diag)
    finally:
        torch.set_num_threads(threads)


def build():
    import gradio as gr

    gr.Markdown(
        "Cross-Iteration BN pools per-channel statistics over the last *k* iterations. Statistics of earlier "
        "iterations were made by older weights, so each is moved to the current weights with a first-order "
        "Taylor step (ρ = 1) before pooling; ρ = 0 is the naive window. **Replay** the committed run "
        "(`workbench train cbn-diagnostic`) or **train live** (a SmallResNet on 8×8 digits, a few seconds). "
        "The bands span each window estimate's error to the *true* window statistics (past inputs re-run "
        "through the current weights).")
    with gr.Row():
        bs = gr.Slider(*LIMITS["batch_size"], value=DEFAULTS["batch_size"], step=1, label="batch size",
                       elem_id="cbn-batch")
        win = gr.Slider(*LIMITS["window"], value=DEFAULTS["window"], step=1, label="window k (iterations)",
                        elem_id="cbn-window")
        rho = gr.Slider(*LIMITS["rho"], value=DEFAULTS["rho"], step=0.1, label="ρ (compensation)", elem_id="cbn-rho")
        burn = gr.Slider(*LIMITS["burnin"], value=DEFAULTS["burnin"], step=1, label="burn-in (steps of plain BN)",
                         elem_id="cbn-burnin")
    with gr.Row():
        steps = gr.Slider(*LIMITS["steps"], value=DEFAULTS["steps"], step=10, label="live steps", elem_id="cbn-steps")
        layer = gr.Dropdown(list(LAYERS), value=DEFAULTS["layer"], label="layer", elem_id="cbn-layer")
        channel = gr.Slider(*LIMITS["channel"], value=DEFAULTS["channel"], step=1, label="channel",
                            elem_id="cbn-channel")
    with gr.Row():
        replay_btn = gr.Button("Replay recorded run", elem_id="cbn-replay")
        live_btn = gr.Button("Train live", variant="primary", elem_id="cbn-live")
    try:
        traj0, err0, loss0, text0, diag0 = replay(DEFAULTS["channel"])
    except (ValueError, FileNotFoundError) as e:
        traj0 = err0 = loss0 = None
        text0, diag0 = f"**Not available:** {e}", {}
    state = gr.State(diag0)
    summary = gr.Markdown(text0, elem_id="cbn-summary")
    traj = gr.Plot(traj0, elem_id="cbn-traj", label="statistics of one channel")
    with gr.Row():
        err = gr.Plot(err0, elem_id="cbn-error", label="compensation error")
        loss = gr.Plot(loss0, elem_id="cbn-loss", label="loss")

    outputs = [traj, err, loss, summary, state]
    replay_btn.click(guard(replay), [channel], outputs, api_name="cbn_replay")
    live_btn.click(guard(live), [bs, win, rho, burn, steps, layer, channel], outputs, api_name="cbn_live")
    channel.change(guard(render), [state, channel], [traj, err, loss, summary], api_name="cbn_channel",
                   trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="CBN statistics")
