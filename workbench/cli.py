"""The ``workbench`` command line: ``app``, ``lab``, ``info``, ``checkpoints``, ``train <job>``, ``bench <name>``,
``report``. Everything runs from the installed package; only ``--commit`` options (and ``lab``, which opens
the repository's notebooks) need the source checkout."""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from . import __version__, benchmarks
from .bench import cpu_name
from .data.cache import cache_dir
from .helptext import HelpFormatter, plain
from .records import NotACheckout, repo_root
from .report import write_report
from .studies import discover


def _offline_env() -> None:
    """No telemetry, no hub: set before gradio / huggingface_hub are imported."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cmd_app(args) -> int:
    _offline_env()
    from .apps import hub  # local: importing the apps sets the offline env; only `workbench app` should

    hub.main(host=args.host, port=args.port, tab=args.tab)
    return 0


def lab_settings_dir() -> Path:
    """A JupyterLab user-settings folder that turns off the news prompt and update checks (no outside
    requests, no "get notified about Jupyter news?" popup)."""
    import json

    d = cache_dir("jupyterlab-settings")
    f = d / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return d


def cmd_lab(args) -> int:
    try:
        nb = repo_root() / "notebooks"
    except NotACheckout as e:
        print(f"workbench lab opens the notebooks of the source checkout: {e}", file=sys.stderr)
        return 2
    if not nb.is_dir():
        print(f"workbench lab opens the notebooks of the source checkout ({nb} was not found)", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ip={args.host}", f"--port={args.port}",
           f"--notebook-dir={nb}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={lab_settings_dir()}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, PLOTLY_RENDERER=os.environ.get("PLOTLY_RENDERER", "plotly_mimetype+notebook_connected"))
    print("starting:", " ".join(cmd), flush=True)
    os.execve(sys.executable, cmd, env)  # become the server: Ctrl-C and signals reach jupyter directly


def info_dict() -> dict:
    import numpy
    import torch

    d = {
        "workbench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch threads": torch.get_num_threads(),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "torch CUDA": torch.cuda.is_available(),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "nvcc": shutil.which("nvcc"),
    }
    for mod in ("gradio", "plotly", "ipywidgets", "jupyterlab", "numba", "transformers"):
        spec = importlib.util.find_spec(mod)
        if spec is None:
            d[mod] = "not installed"
        else:
            from importlib.metadata import PackageNotFoundError, version

            try:
                d[mod] = version(mod)
            except PackageNotFoundError:
                d[mod] = "installed"
    if importlib.util.find_spec("cupy") is None:
        d["cupy"] = "not installed (pip install '.[gpu]' for the sparse GPU kernels)"
    else:
        try:
            import cupy

            d["cupy"] = f"{cupy.__version__}, GPU usable: {bool(cupy.cuda.is_available())}"
        except Exception as e:  # a broken CUDA install must not break `info`
            d["cupy"] = f"installed but unusable: {type(e).__name__}"
    return d


def cmd_info(args) -> int:
    for k, v in info_dict().items():
        print(f"{k:>14}: {v}")
    return 0


def cmd_checkpoints(args) -> int:
    from .checkpoints import demo_index, write_demo_readme

    rows = demo_index()
    if args.write_readme:
        print("wrote", write_demo_readme())
    for r in rows:
        print(f"{r['file']:<34} {r['megabytes']:>6} MB  {r['command']}")
    if not rows:
        print("no demo checkpoints yet")
    return 0


def cmd_train(args) -> int:
    jobs, errors = discover()
    if args.list or not args.job:
        print("training jobs (workbench train <job> --help for options):")
        for name, (_, help_text, mod) in sorted(jobs.items()):
            print(f"  {name:<24} {help_text}  [{mod}]")
        for mod, err in errors.items():
            print(f"  (workbench/studies/{mod}.py failed to import: {err})")
        return 0 if not args.job else 2
    if args.job not in jobs:
        print(f"unknown job {args.job!r}; known: {', '.join(sorted(jobs))}", file=sys.stderr)
        for mod, err in errors.items():
            print(f"(workbench/studies/{mod}.py failed to import: {err})", file=sys.stderr)
        return 2
    fn = jobs[args.job][0]
    rc = fn(list(args.rest))
    return rc if isinstance(rc, int) else 0


def bench_modules() -> dict[str, str]:
    """``{name: module}`` of every benchmark in ``workbench.benchmarks``."""
    import pkgutil

    return {i.name: f"{benchmarks.__name__}.{i.name}" for i in sorted(pkgutil.iter_modules(benchmarks.__path__),
                                                                    key=lambda i: i.name) if not i.name.startswith("_")}


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a benchmark's docstring as plain text, without a leading "workbench bench <name>: "."""
    text = plain(" ".join((doc or "").split("\n\n")[0].split()))
    text = text.split(": ", 1)[1] if text.startswith(("workbench bench", "Benchmark workbench bench")) and ": " in text else text
    end = text.find(". ")
    return (text if end < 0 else text[:end + 1]).strip()


def cmd_bench(args) -> int:
    import importlib

    names = bench_modules()
    if args.list or not args.name:
        print("benchmarks (workbench bench <name> --help for options; results go to runs/benchmarks/, "
              "--commit writes the checkout's committed benchmarks/results/):")
        for n, modname in names.items():
            mod = importlib.import_module(modname)
            print(f"  {n:<8} {_first_sentence(mod.__doc__)} ({getattr(mod, 'DURATION', 'duration unknown')})")
        return 0 if not args.name else 2
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; known: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    mod = importlib.import_module(names[args.name])
    rc = mod.main(list(args.rest))
    return rc if isinstance(rc, int) else 0


def cmd_report(args) -> int:
    try:
        path = write_report(args.out, studies=args.studies)
    except FileNotFoundError as e:
        print(f"workbench report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} (open it in a browser; it needs no network)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="workbench", description="Vision Workbench: run, see and trust seven vision papers.",
                                formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("app", help="Serve the Gradio app hub (open the printed address in a browser; Ctrl-C stops it).",
                       formatter_class=fmt)
    a.add_argument("--host", default="127.0.0.1", help="Interface to bind; the default serves this machine only.")
    a.add_argument("--port", type=int, default=7860, help="Port to serve on.")
    a.add_argument("--tab", default=None, help="Serve only this paper's app (swin_v2, simmim, moby, cbn, dnl, icar, sparse).")
    a.set_defaults(fn=cmd_app)
    lab = sub.add_parser("lab", help="Serve JupyterLab on the repository's notebooks/ folder.", formatter_class=fmt)
    lab.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    lab.add_argument("--port", type=int, default=8888, help="Port to serve on.")
    lab.set_defaults(fn=cmd_lab)
    i = sub.add_parser("info", help="Print versions, threads, CuPy and GPU availability.")
    i.set_defaults(fn=cmd_info)
    c = sub.add_parser("checkpoints", help="List the committed demo checkpoints and the commands that make them.",
                       formatter_class=fmt)
    c.add_argument("--write-readme", action="store_true", help="Rewrite workbench/assets/checkpoints/README.md.")
    c.set_defaults(fn=cmd_checkpoints)
    t = sub.add_parser("train", help="Train a demo model or run a paper study (workbench train --list).",
                       formatter_class=fmt)
    t.add_argument("--list", action="store_true", help="List the jobs.")
    t.add_argument("job", nargs="?", help="The job to run.")
    t.add_argument("rest", nargs=argparse.REMAINDER, help="Options of the job (workbench train <job> --help).")
    t.set_defaults(fn=cmd_train)
    b = sub.add_parser("bench", help="Run a benchmark (workbench bench --list).", formatter_class=fmt)
    b.add_argument("--list", action="store_true", help="List the benchmarks with their expected durations.")
    b.add_argument("name", nargs="?", help="The benchmark to run.")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="Options of the benchmark (workbench bench <name> --help).")
    b.set_defaults(fn=cmd_bench)
    r = sub.add_parser("report", help="Write one offline HTML page with every paper's claims and our verdicts.",
                       formatter_class=fmt)
    r.add_argument("--out", default="runs/report.html", help="Path of the HTML page.")
    r.add_argument("--studies", default=None,
                   help="Folder holding <paper>/claims.json (default: the committed studies shipped with the package).")
    r.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
