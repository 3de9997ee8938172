"""The ``workbench train <job>`` and ``workbench bench <name>`` command lines.

* every option of every job's and benchmark's parser has help text (the parsers are captured in-process at
  ``parse_args``, before the job does anything), shows its default once, and no reST markup reaches the output
  (``workbench --help`` and its commands too);
* ``workbench bench --list`` gives a description and a duration for every benchmark;
* nothing writes into committed paths by default: studies write under ``runs/<paper>`` unless ``--commit``,
  demo jobs need ``--save-demo`` / ``--commit`` to touch the committed files, benchmarks write under
  ``runs/benchmarks``; a tiny real ``swinv2-study`` run in a scratch folder writes there and leaves ``studies/`` alone.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


class _Parsed(Exception):
    def __init__(self, parser, namespace):
        super().__init__("parsed")
        self.parser, self.namespace = parser, namespace


def capture_parser(main, argv=()) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Run ``main(argv)`` until it parses its arguments; return the parser and the parsed namespace.
    (``parse_args`` goes through ``parse_known_args``, which is intercepted.)"""
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        ns, _ = real(self, args, namespace)
        raise _Parsed(self, ns)

    argparse.ArgumentParser.parse_known_args = parse_known_args
    try:
        main(list(argv))
    except _Parsed as p:
        return p.parser, p.namespace
    finally:
        argparse.ArgumentParser.parse_known_args = real
    raise AssertionError(f"{main} returned without parsing its arguments")


def _jobs():
    from workbench.studies import discover

    jobs, errors = discover()
    assert not errors, f"study modules failed to import: {errors}"
    return jobs


def _benches():
    from workbench.cli import bench_modules

    return bench_modules()


JOBS = sorted(_jobs())
BENCHES = sorted(_benches())


def test_the_expected_jobs_and_benchmarks_are_registered():
    assert {"swinv2-study", "swinv2-demo", "simmim-study", "simmim-demo", "moby-study", "moby-demo", "dnl-study",
            "icar-study", "icar-demo", "cbn-study", "cbn-demo", "sparse-study", "sparse-demo"} <= set(JOBS)
    assert {"swinv2", "simmim", "moby", "cbn", "dnl", "icar", "sparse"} <= set(BENCHES)


def _help_problems(parser: argparse.ArgumentParser) -> list[str]:
    bad = []
    for a in parser._actions:
        name = "/".join(a.option_strings) or a.dest
        if a.help is None or a.help == argparse.SUPPRESS or not str(a.help).strip():
            bad.append(name)
    return bad


def _text_problems(parser: argparse.ArgumentParser) -> list[str]:
    """What --help prints with reST markup in it, and help texts that give their default twice ("... (default:
    runs/dnl in the current folder). (default: None)"), in ``parser`` and its sub-commands."""
    bad = []
    text = parser.format_help()
    bad += [f"{parser.prog}: markup in {ln.strip()!r}" for ln in text.splitlines() if "``" in ln]
    fmt = parser._get_formatter()
    for a in parser._actions:
        if a.help is None or a.help == argparse.SUPPRESS:
            continue
        shown = fmt._expand_help(a)        # the help text as printed, "(default: ...)" added by the formatter
        name = f"{parser.prog} {'/'.join(a.option_strings) or a.dest}"
        if "``" in shown:
            bad.append(f"{name}: markup in {shown!r}")
        if shown.lower().count("(default") > 1:
            bad.append(f"{name}: the default twice in {shown!r}")
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                bad += _text_problems(sub)
    return bad


def test_help_formatter_gives_the_default_once_and_plain_text():
    from workbench.helptext import HelpFormatter, plain

    assert plain("``workbench bench cbn``: see :func:`workbench.bench.run` and :class:`~a.b.Folder`, `x`") == (
        "workbench bench cbn: see workbench.bench.run and Folder, x")
    p = argparse.ArgumentParser(prog="t", description="Times ``sparsify_``.", formatter_class=HelpFormatter)
    p.add_argument("--out", default=None, help="Folder (default: runs/t in the current folder).")
    p.add_argument("--n", type=int, default=3, help="Repeats of ``f``.")
    p.add_argument("--m", type=int, default=4, help="Rows (default: %(default)s).")
    text = " ".join(p.format_help().split())
    assert "Times sparsify_." in text and "Repeats of f. (default: 3)" in text and "Rows (default: 4)." in text
    assert "Folder (default: runs/t in the current folder). --n" in text and "(default: None)" not in text
    assert not _text_problems(p)
    bad = argparse.ArgumentParser(prog="b", description="``x``", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bad.add_argument("--out", default=None, help="Folder (default: runs/b).")
    assert len(_text_problems(bad)) == 2   # the checker sees both faults of the plain argparse formatter


def test_workbench_help_and_its_commands_read_plainly():
    from workbench.cli import build_parser

    assert not _text_problems(build_parser())


@pytest.mark.parametrize("job", JOBS)
def test_every_train_option_has_help(job):
    fn = _jobs()[job][0]
    parser, _ = capture_parser(fn)
    assert parser.prog == f"workbench train {job}"
    assert not _help_problems(parser), f"options without help text: {_help_problems(parser)}"
    assert (parser.description or "").strip(), "the job's parser has no description"
    assert not _text_problems(parser), _text_problems(parser)
    text = parser.format_help()            # what --help prints (a stray % in a help string breaks it)
    for a in parser._actions:
        assert all(o in text for o in a.option_strings)


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_option_has_help(name):
    mod = importlib.import_module(_benches()[name])
    parser, args = capture_parser(mod.main)
    assert parser.prog == f"workbench bench {name}"
    assert not _help_problems(parser), f"options without help text: {_help_problems(parser)}"
    assert (parser.description or "").strip()
    assert not _text_problems(parser), _text_problems(parser)
    text = parser.format_help()
    for a in parser._actions:
        assert all(o in text for o in a.option_strings)
    # benchmarks write under runs/benchmarks unless --commit
    from workbench import bench

    out = bench.output_dir(args)
    assert out.parts[:2] == ("runs", "benchmarks") and not out.is_absolute(), out


def test_cli_help_of_a_job_prints_every_option():
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "swinv2-study", "--help"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.startswith("usage: workbench train swinv2-study")
    for opt in ("--seeds", "--resume", "--budget-min", "--out", "--commit"):
        assert opt in r.stdout


def test_bench_list_shows_a_description_and_a_duration_for_each_benchmark():
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "bench", "--list"], capture_output=True, text=True,
                       timeout=180, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "`" not in r.stdout, "reST markup in the list"
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln.startswith("  ") and ln.split()}
    assert set(lines) == set(BENCHES)
    for name, line in lines.items():
        mod = importlib.import_module(_benches()[name])
        duration = getattr(mod, "DURATION", None)
        assert duration and "minute" in duration, f"{name}: no DURATION"
        assert line.rstrip().endswith(f"({duration})"), line
        description = line.strip()[len(name):].rsplit(f"({duration})", 1)[0].strip()
        assert len(description) > 15 and "duration unknown" not in line, line


# ------------------------------------------------------------------------------------------------ default outputs
def _committed_paths() -> list[Path]:
    from workbench.checkpoints import DEMO_DIR

    return [REPO / "studies", DEMO_DIR, REPO / "workbench" / "assets" / "studies", REPO / "benchmarks" / "results"]


def _under(path: Path, roots) -> bool:
    p = Path(os.path.abspath(path))
    return any(p == r or r in p.parents for r in (Path(os.path.abspath(x)) for x in roots))


@pytest.mark.parametrize("job", JOBS)
def test_jobs_write_under_runs_unless_told_otherwise(job, monkeypatch, tmp_path):
    """Studies (``--commit`` jobs) resolve their output folder to ``runs/<paper>`` in the current folder; demo
    jobs need an explicit ``--save-demo`` or ``--commit`` to touch the committed files, and every default path
    they name lies under ``runs/``."""
    from workbench.studies import protocol

    monkeypatch.delenv("WORKBENCH_RUNS", raising=False)
    fn, _, module = _jobs()[job]
    parser, args = capture_parser(fn)
    dests = {a.dest: a for a in parser._actions}
    for a in parser._actions:
        if isinstance(a.default, str) and ("/" in a.default or a.default.endswith((".pt", ".json", ".jsonl"))):
            assert a.default.startswith("runs/"), f"{job}: --{a.dest} defaults to {a.default!r}"
    if "commit" in dests:
        assert args.commit is False
    if "save_demo" in dests:
        assert args.save_demo is False
    if getattr(args, "seeds", None) is not None and "commit" in dests and "out" in dests and args.out is None:
        paper = importlib.import_module(f"workbench.studies.{module}").PAPER
        out = protocol.out_dir(args, paper)
        assert out == Path("runs") / paper and not _under(out, _committed_paths()), out
        monkeypatch.chdir(tmp_path)
        assert not _under(out.resolve(), _committed_paths())
    if job.endswith("-demo"):
        has_switch = "save_demo" in dests or "commit" in dests
        assert has_switch, f"`workbench train {job}` overwrites committed files without --save-demo / --commit"


def test_simmim_study_out_dir_without_commit_is_under_runs(monkeypatch):
    from workbench.studies import protocol
    from workbench.studies import simmim as study

    monkeypatch.delenv("WORKBENCH_RUNS", raising=False)
    _, args = capture_parser(study.main_study)
    assert protocol.out_dir(args, study.PAPER) == Path("runs") / "simmim"
    _, args = capture_parser(study.main_study, ["--commit"])
    assert protocol.out_dir(args, study.PAPER).resolve() == (REPO / "studies" / "simmim").resolve()
    _, args = capture_parser(study.main_study, ["--commit", "--out", "x"])
    with pytest.raises(SystemExit):
        protocol.out_dir(args, study.PAPER)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    if root.exists():
        for f in root.rglob("*"):
            if f.is_file():
                out[str(f.relative_to(root))] = (f.stat().st_mtime_ns, hashlib.sha1(f.read_bytes()).hexdigest())
    return out


@pytest.mark.slow
def test_a_tiny_swinv2_study_writes_to_runs_in_the_current_folder(tmp_path):
    """The real command, run from a scratch folder: records land in ./runs/swin_v2/, and nothing of the repository's
    committed Swin V2 study (studies/, workbench/assets/studies/) is touched. (Only the Swin V2 paths are
    compared, as other papers' studies may be regenerated while the test runs.)"""
    roots = [REPO / "studies", REPO / "workbench" / "assets" / "studies"]
    before = [_snapshot(r) for r in roots]
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_RUNS"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "swinv2-study", "--steps", "2",
                        "--ft-steps", "1", "--deep-steps", "1", "--depth", "1", "--n-train", "300", "--n-test", "60", "--seeds", "0", "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = tmp_path / "runs" / "swin_v2" / "records.jsonl"
    assert records.exists() and (tmp_path / "runs" / "swin_v2" / "claims.json").exists()
    import json

    recs = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert {r["seed"] for r in recs} == {0} and {r["part"] for r in recs} == {"transfer", "activations"}
    assert str(records.relative_to(tmp_path)) in r.stdout     # the command says where the records went
    after = [_snapshot(r) for r in roots]
    for b, a in zip(before, after):
        changed = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert not {k for k in changed if "swin" in k}, f"committed Swin V2 files changed: {sorted(changed)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
