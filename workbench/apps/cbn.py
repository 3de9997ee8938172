"""App tab "CBN": how well do past iterations' statistics, moved to today's weights by a Taylor step, match the
truth? Replay the committed diagnostic run or train a small ResNet live on 32 px shapes with the chosen batch size,
window, ρ and burn-in; for one channel of one layer the current-batch, naive-window, compensated-window and true
statistics stream in, with the compensation errors and the loss.
Layout and wiring only: ``workbench.demos.cbn`` trains and measures, ``workbench.viz.cbn`` draws.
Run alone with ``workbench app --tab cbn``."""
from __future__ import annotations

from workbench.apps.common import choice_dropdown, guard, launch

DEFAULTS = dict(batch_size=32, stat_batch="1", window=4, rho=1.0, burnin=20, steps=80, layer="blocks.1.conv1",
                channel=0)
WHOLE = "whole batch"   # = demos.cbn.WHOLE (kept literal: the app module imports no torch at start-up)


def _out(p):
    return p.figures["trajectories"], p.figures["errors"], p.figures["loss"], p.values["diag"], p.text


def replay(channel):
    from workbench.demos import cbn as demo

    return _out(demo.panel(demo.recorded(), channel))


def live(batch_size, window, rho, burnin, steps, layer, channel, stat_batch=WHOLE):
    from workbench.demos import cbn as demo

    for p in demo.live(batch_size, window, rho, burnin, steps, layer, channel, demo.parse_stat_batch(stat_batch)):
        yield _out(p)


def render(diag, channel):
    from workbench.demos import cbn as demo

    p = demo.panel(diag, channel)
    return p.figures["trajectories"], p.figures["errors"], p.figures["loss"], p.text


def channel_range(layer, channel):
    """The channel slider follows the layer's width."""
    import gradio as gr

    from workbench.demos import cbn as demo

    n = demo.channels(layer)
    return gr.update(maximum=n - 1, value=min(int(channel or 0), n - 1))


def stat_batch_choices(batch_size, stat_batch):
    """The statistics-batch choices follow the batch: only group sizes that divide it (the current one is kept
    when it still does)."""
    import gradio as gr

    from workbench.demos import cbn as demo

    choices = demo.stat_batch_choices(batch_size)
    return gr.update(choices=choices, value=stat_batch if stat_batch in choices else choices[0])


def build():
    import gradio as gr

    from workbench.demos import cbn as demo

    demo.warm()
    gr.Markdown(
        "Cross-Iteration BN pools per-channel statistics over the last *k* iterations. Statistics of earlier "
        "iterations were made by older weights, so each is moved to the current weights with a first-order Taylor "
        "step (ρ = 1) before pooling; ρ = 0 is the naive window. **Replay** the committed run "
        f"(`{demo.COMMAND}`: batch 32 split into statistics groups of one image, like 32 GPUs with one image each, "
        "where the CBN study finds BN's small-batch gap) or **train live** (a small ResNet on 32 px shapes). The "
        "bands span each window estimate's error to the *true* window statistics (past inputs re-run through the "
        "current weights); the record follows the first statistics group.")
    lim = demo.LIMITS
    with gr.Row():
        bs = gr.Slider(*lim["batch_size"], value=DEFAULTS["batch_size"], step=1, label="batch size", elem_id="cbn-batch")
        sb = choice_dropdown(stat_batch_choices(DEFAULTS["batch_size"], DEFAULTS["stat_batch"])["choices"],
                             value=DEFAULTS["stat_batch"], label="images per statistics group",
                             elem_id="cbn-stat-batch")
        win = gr.Slider(*lim["window"], value=DEFAULTS["window"], step=1, label="window k (iterations)",
                        elem_id="cbn-window")
        rho = gr.Slider(*lim["rho"], value=DEFAULTS["rho"], step=0.1, label="ρ (compensation)", elem_id="cbn-rho")
        burn = gr.Slider(*lim["burnin"], value=DEFAULTS["burnin"], step=1, label="burn-in (steps of plain BN)",
                         elem_id="cbn-burnin")
    with gr.Row():
        steps = gr.Slider(*lim["steps"], value=DEFAULTS["steps"], step=10, label="live steps", elem_id="cbn-steps")
        layer = gr.Dropdown(list(demo.LAYERS), value=DEFAULTS["layer"], label="layer", elem_id="cbn-layer")
        channel = gr.Slider(0, demo.channels(DEFAULTS["layer"]) - 1, value=DEFAULTS["channel"], step=1,
                            label="channel", elem_id="cbn-channel")
    with gr.Row():
        replay_btn = gr.Button("Replay recorded run", elem_id="cbn-replay")
        live_btn = gr.Button("Train live", variant="primary", elem_id="cbn-live")
    try:
        traj0, err0, loss0, diag0, text0 = replay(DEFAULTS["channel"])
    except (ValueError, FileNotFoundError) as e:
        traj0 = err0 = loss0 = None
        text0, diag0 = f"**Not available:** {e}", {}
    state = gr.State(diag0)
    summary = gr.Markdown(text0, elem_id="cbn-summary")
    traj = gr.Plot(traj0, elem_id="cbn-traj", label="statistics of one channel")
    with gr.Row():
        err = gr.Plot(err0, elem_id="cbn-error", label="compensation error")
        loss = gr.Plot(loss0, elem_id="cbn-loss", label="loss")

    outputs = [traj, err, loss, state, summary]
    replay_btn.click(guard(replay, len(outputs)), [channel], outputs, api_name="cbn_replay")
    live_btn.click(guard(live, len(outputs)), [bs, win, rho, burn, steps, layer, channel, sb], outputs,
                   api_name="cbn_live")
    bs.change(guard(stat_batch_choices), [bs, sb], sb, api_name=False, trigger_mode="always_last")
    layer.change(guard(channel_range), [layer, channel], channel, api_name=False)
    channel.change(guard(render, 4), [state, channel], [traj, err, loss, summary], api_name="cbn_channel",
                   trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="CBN statistics")
