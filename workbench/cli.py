"""The ``workbench`` command line: ``app``, ``lab``, ``info``, ``train <job>``, ``bench <name>``."""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from .records import repo_root


def _offline_env() -> None:
    """No telemetry, no hub: set before gradio / huggingface_hub are imported."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cmd_app(args) -> int:
    _offline_env()
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from apps import hub

    hub.main(host=args.host, port=args.port, tab=args.tab)
    return 0


def cmd_lab(args) -> int:
    nb = repo_root() / "notebooks"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ip={args.host}", f"--port={args.port}",
           f"--notebook-dir={nb}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, PLOTLY_RENDERER=os.environ.get("PLOTLY_RENDERER", "plotly_mimetype+notebook_connected"))
    print("starting:", " ".join(cmd), flush=True)
    os.execve(sys.executable, cmd, env)  # become the server: Ctrl-C and signals reach jupyter directly


def info_dict() -> dict:
    import numpy
    import torch

    from . import __version__
    from .bench import cpu_name

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
    from .studies import discover

    jobs, errors = discover()
    if args.list or not args.job:
        print("training jobs (workbench train <job> --help for options):")
        for name, (_, help_text, mod) in sorted(jobs.items()):
            print(f"  {name:<24} {help_text}  [{mod}]")
        for mod, err in errors.items():
            print(f"  (studies/{mod}.py failed to import: {err})")
        return 0 if not args.job else 2
    if args.job not in jobs:
        print(f"unknown job {args.job!r}; known: {', '.join(sorted(jobs))}", file=sys.stderr)
        for mod, err in errors.items():
            print(f"(studies/{mod}.py failed to import: {err})", file=sys.stderr)
        return 2
    fn = jobs[args.job][0]
    rc = fn(list(args.rest))
    return rc if isinstance(rc, int) else 0


def bench_names() -> dict[str, Path]:
    folder = repo_root() / "benchmarks"
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")} if folder.is_dir() else {}


def cmd_bench(args) -> int:
    names = bench_names()
    if args.list or not args.name:
        print("benchmarks (results go to benchmarks/results/):")
        for n in names:
            print(f"  {n}")
        return 0 if not args.name else 2
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; known: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"benchmarks_{args.name}", names[args.name])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(list(args.rest))
    return rc if isinstance(rc, int) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="Vision Workbench: run, see and trust seven vision papers.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("app", help="launch the Gradio app hub")
    a.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    a.add_argument("--port", type=int, default=7860)
    a.add_argument("--tab", default=None, help="open only this paper's app (module name, e.g. simmim)")
    a.set_defaults(fn=cmd_app)
    lab = sub.add_parser("lab", help="open JupyterLab on notebooks/")
    lab.add_argument("--host", default="127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.set_defaults(fn=cmd_lab)
    i = sub.add_parser("info", help="versions, threads, CuPy and GPU availability")
    i.set_defaults(fn=cmd_info)
    c = sub.add_parser("checkpoints", help="list the committed demo checkpoints and the commands that make them")
    c.add_argument("--write-readme", action="store_true", help="rewrite workbench/assets/checkpoints/README.md")
    c.set_defaults(fn=cmd_checkpoints)
    t = sub.add_parser("train", help="train a demo model or run a paper study", add_help=True)
    t.add_argument("--list", action="store_true", help="list the jobs")
    t.add_argument("job", nargs="?")
    t.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the job")
    t.set_defaults(fn=cmd_train)
    b = sub.add_parser("bench", help="run a benchmark (writes benchmarks/results/<name>.json and .md)")
    b.add_argument("--list", action="store_true")
    b.add_argument("name", nargs="?")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
