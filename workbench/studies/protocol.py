"""The study protocol that every ``workbench train <study>`` follows.

A study compares *arms* (e.g. "scratch" and "SimMIM") over *seeds*. The protocol fixes what makes such a
comparison convincing, so that no study has to re-decide it:

* **Runs are records.** Each finished (part, arm, seed) is appended to ``records.jsonl`` as one JSON line
  with its configuration hash, metrics, step count and CPU seconds. ``--resume`` skips the runs already
  recorded with the same configuration, so a study cut off mid-way continues where it stopped.
* **Seeds.** Every arm runs with the same seeds (``SEEDS``, at least three), so arms can be compared
  *paired*: seed ``s`` of the method against seed ``s`` of the baseline (same data order, same init where
  the arms share an architecture).
* **Statistics.** Per arm: mean and sample standard deviation (ddof 1). Per comparison: the paired
  difference ``d_s = method_s - baseline_s``, its mean, standard error ``SE = sd(d) / sqrt(n)`` and the 95%
  interval ``mean +- t_{0.975, n-1} * SE`` (Student t).
* **Verdict.** A comparison counts only when every baseline arm is at least halfway from chance to
  perfect (``(mean - chance) / (perfect - chance) >= 0.5``). Then, with ``Delta`` the mean difference signed
  so that positive is the paper's direction:

  - ``reproduced``     : ``Delta > 2 SE`` (and ``n >= 3``);
  - ``partly``         : ``Delta > 0`` but not beyond 2 SE, or fewer than three seeds;
  - ``not reproduced`` : ``Delta <= 0``, or the baseline is not halfway (then the reason says the
    comparison does not count).

* **Schedules.** Training runs use normalised inputs and linear warm-up + cosine decay
  (:func:`workbench.train.lr_at` through :func:`workbench.train.fit`); ``--budget-min`` scales the planned
  steps of every run so that the whole study fits the budget (:func:`plan_steps`).
* **Outputs.** By default a study writes under ``runs/<paper>/`` (git-ignored, in the current folder);
  ``--commit`` writes the committed records in the checkout's ``studies/<paper>/`` (a link to
  ``workbench/assets/studies/<paper>/``, shipped with the package). ``claims.json`` is
  generated from the records (:func:`write_claims`) and feeds ``workbench report``.

``claims.json`` schema::

    {"paper": str, "claims": [{"id", "claim", "paper_value", "metric", "direction": "higher"|"lower",
      "chance": number|null, "perfect": number, "arms": {name: {"mean", "sd", "n"}}, "baseline", "method",
      "verdict": "reproduced"|"partly"|"not reproduced", "why", "command",
      "difference": {"mean", "se", "ci95": [lo, hi], "n"}}]}
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from workbench.helptext import HelpFormatter
from workbench.records import PACKAGE_DIR, STUDIES_DIR, NotACheckout, repo_root

SEEDS: tuple[int, ...] = (0, 1, 2)
HALFWAY = 0.5
VERDICTS = ("reproduced", "partly", "not reproduced")


# ------------------------------------------------------------------------------------------------ statistics
def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """``{"mean", "sd", "n"}`` with the sample standard deviation (0 for a single value)."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": n}


def t_quantile(n: int, q: float = 0.975) -> float:
    """Student-t quantile with ``n - 1`` degrees of freedom (normal for large n)."""
    from scipy.stats import t

    return float(t.ppf(q, max(1, n - 1)))


def difference(method: Mapping[int, float], baseline: Mapping[int, float]) -> dict[str, Any]:
    """Mean difference ``method - baseline`` over the seeds both have (paired), with SE and 95% interval.

    Without common seeds the arms are compared unpaired (Welch's standard error).
    """
    common = sorted(set(method) & set(baseline))
    if len(common) >= 2:
        d = [float(method[s]) - float(baseline[s]) for s in common]
        st = summarize(d)
        se = st["sd"] / math.sqrt(st["n"])
        n, paired = st["n"], True
        mean = st["mean"]
    else:
        a, b = summarize(method.values()), summarize(baseline.values())
        mean = a["mean"] - b["mean"]
        if a["n"] < 2 or b["n"] < 2:
            se, n = float("nan"), min(a["n"], b["n"])
        else:
            se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
            n = min(a["n"], b["n"])
        paired = False
    half = t_quantile(n) * se if n >= 2 and math.isfinite(se) else float("nan")
    return {"mean": mean, "se": se, "ci95": [mean - half, mean + half], "n": n, "paired": paired}


def halfway(mean: float, chance: float | None, perfect: float = 1.0) -> float:
    """Where ``mean`` lies between chance (0) and perfect (1); 1.0 when there is no chance level."""
    if chance is None:
        return 1.0
    if perfect == chance:
        raise ValueError("perfect and chance must differ")
    return (mean - chance) / (perfect - chance)


@dataclass
class Claim:
    """One of the paper's statements, tested by comparing ``method`` against ``baseline`` on ``metric``.

    ``part`` selects the records; ``arms`` (default: every arm of the part with the metric) are shown;
    ``margin`` turns the claim into non-inferiority ("as good as, within ``margin``"): the difference is judged
    after adding the margin, ``reproduced`` when ``Delta + margin > 2 SE``.
    ``baselines`` are the arms that must be halfway from chance (default: ``baseline`` alone); a mapping
    ``{arm: (chance, perfect)}`` gives an arm its own levels (e.g. the trained model's seen-class accuracy when the
    baseline condition is at chance by construction).
    """

    id: str
    claim: str
    paper_value: str
    metric: str
    direction: str
    baseline: str
    method: str
    part: str
    chance: float | None = None
    perfect: float = 1.0
    arms: Sequence[str] | None = None
    baselines: Sequence[str] | Mapping[str, tuple[float | None, float]] | None = None
    command: str = ""
    note: str = ""
    margin: float | None = None   # non-inferiority: the method may trail the baseline by up to this much

    def __post_init__(self):
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "none"
    if not math.isfinite(v):
        return "nan"
    a = abs(v)
    return f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.2e}"


def judge(claim: Claim, values: Mapping[str, Mapping[int, float]]) -> dict[str, Any]:
    """The ``claims.json`` entry for ``claim`` given ``values[arm][seed]``."""
    for arm in (claim.baseline, claim.method):
        if arm not in values or not values[arm]:
            raise ValueError(f"claim {claim.id!r}: no records for arm {arm!r} with metric {claim.metric!r}")
    shown = list(claim.arms) if claim.arms is not None else list(values)
    arms = {a: summarize(values[a].values()) for a in shown if a in values and values[a]}
    diff = difference(values[claim.method], values[claim.baseline])
    sign = 1.0 if claim.direction == "higher" else -1.0
    delta, se, n = sign * diff["mean"], diff["se"], diff["n"]
    if claim.margin is not None:
        delta += claim.margin
    low = []
    checks = claim.baselines or [claim.baseline]
    levels = dict(checks) if isinstance(checks, Mapping) else {b: (claim.chance, claim.perfect) for b in checks}
    for b, (chance, perfect) in levels.items():
        if b in values and values[b]:
            m = summarize(values[b].values())["mean"]
            h = halfway(m, chance, perfect)
            if h < HALFWAY:
                low.append(f"{b} reaches {_fmt(m)}, only {h:.0%} of the way from chance ({_fmt(chance)}) "
                           f"to perfect ({_fmt(perfect)})")
    d_txt = f"{claim.method} - {claim.baseline} = {_fmt(diff['mean'])} (95% CI {_fmt(diff['ci95'][0])} to " \
            f"{_fmt(diff['ci95'][1])}, SE {_fmt(se)}, n = {n}{', paired by seed' if diff['paired'] else ''})"
    if low:
        verdict = "not reproduced"
        why = "The comparison does not count: " + "; ".join(low) + f" (needs >= {HALFWAY:.0%}). " + d_txt + "."
    elif n >= 3 and math.isfinite(se) and delta > 2 * se:
        verdict = "reproduced"
        why = (f"{d_txt}: not worse than the baseline by the margin {_fmt(claim.margin)}, beyond 2 SE."
               if claim.margin is not None else f"{d_txt}: beyond 2 SE in the paper's direction ({claim.direction} is better).")
    elif delta > 0:
        verdict = "partly"
        why = (f"{d_txt}: the paper's direction, but " +
               ("fewer than 3 seeds." if n < 3 else "within 2 SE of zero."))
    else:
        verdict, why = "not reproduced", f"{d_txt}: not in the paper's direction ({claim.direction} is better)."
    if claim.note:
        why += " " + claim.note
    return {"id": claim.id, "claim": claim.claim, "paper_value": claim.paper_value, "metric": claim.metric,
            "direction": claim.direction, "chance": claim.chance, "perfect": claim.perfect, "arms": arms,
            "baseline": claim.baseline, "method": claim.method, "verdict": verdict, "why": why,
            "command": claim.command, "difference": diff, **({"margin": claim.margin} if claim.margin is not None else {})}


# ------------------------------------------------------------------------------------------------ records
def config_hash(config: Any) -> str:
    """A short, stable hash of a run's configuration (dataclasses and dicts)."""
    if is_dataclass(config):
        config = asdict(config)
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def default_out(paper: str) -> Path:
    """``runs/<paper>`` in the current folder (``$WORKBENCH_RUNS`` overrides ``runs``): never committed."""
    return Path(os.environ.get("WORKBENCH_RUNS", "runs")) / paper


def committed_dir(paper: str) -> Path:
    """``workbench/assets/studies/<paper>`` of the source checkout (``studies/<paper>`` links to it); an error
    outside a checkout."""
    try:
        root = repo_root()
    except NotACheckout as e:
        raise SystemExit(f"--commit writes the committed records: {e}") from None
    return root / STUDIES_DIR.relative_to(PACKAGE_DIR.parent) / paper


@dataclass
class Study:
    """Append-only records of one paper's study, with resume.

    ``run(part, arms, config)`` runs every (arm, seed) that is not yet recorded with the same configuration
    hash and appends its record; ``values(part, metric)`` reads ``{arm: {seed: value}}`` back.
    """

    paper: str
    out: Path
    seeds: Sequence[int] = SEEDS
    resume: bool = True
    progress: bool = True
    log: Callable[[str], None] = print
    records_name: str = "records.jsonl"
    run_missing: bool = True     # False: judge the records there are, run nothing (``--judge-only``)
    _records: list[dict] = field(default_factory=list, init=False, repr=False)
    _hashes: dict = field(default_factory=dict, init=False, repr=False)   # (part, arm) -> this run's config hash

    def __post_init__(self):
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.path
        if path.exists() and not self.resume:
            path.rename(path.with_name(path.name + f".{int(time.time())}.old"))
        self._records = self.read()

    @property
    def path(self) -> Path:
        return self.out / self.records_name

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut off by a kill: ignored, the run is redone
                    continue
                if isinstance(rec, dict) and {"part", "arm", "seed", "config_hash", "metrics"} <= rec.keys():
                    out.append(rec)           # anything else (e.g. an older record format) is not a protocol run
        return out

    def find(self, part: str, arm: str, seed: int, chash: str | None = None) -> dict | None:
        for r in reversed(self._records):
            if r["part"] == part and r["arm"] == arm and r["seed"] == seed and (chash is None or r["config_hash"] == chash):
                return r
        return None

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        self._records.append(record)

    def run(self, part: str, arms: Mapping[str, Callable[[int], dict]], config: Any,
            seeds: Sequence[int] | None = None, arm_configs: Mapping[str, Any] | None = None) -> list[dict]:
        """Run ``arms[name](seed) -> {metric: value, ...}`` for every arm and seed not yet recorded.

        ``config`` (shared) and ``arm_configs[name]`` are hashed into each record, so a changed setting
        re-runs the affected runs instead of mixing them with stale ones.
        """
        from tqdm.auto import tqdm

        seeds = list(self.seeds if seeds is None else seeds)
        todo, out = [], []
        for arm in arms:
            chash = config_hash({"shared": config, "arm": (arm_configs or {}).get(arm)})
            self._hashes[(part, arm)] = chash
            for s in seeds:
                rec = self.find(part, arm, s, chash)
                if rec is not None:
                    out.append(rec)
                else:
                    todo.append((arm, s, chash))
        if not todo:
            return out
        if not self.run_missing:
            self.log(f"  {part}: {len(todo)} run(s) not recorded with this configuration, not run (--judge-only): "
                     + ", ".join(sorted({f"{a} seed {s}" for a, s, _ in todo}))[:400])
            return out
        bar = tqdm(todo, desc=f"{self.paper}/{part}", unit="run", disable=not self.progress, leave=True)
        for arm, s, chash in bar:
            bar.set_postfix_str(f"{arm}, seed {s}")
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            metrics = dict(arms[arm](s))
            extra = metrics.pop("_extra", None)
            rec = {"part": part, "arm": arm, "seed": s, "config_hash": chash,
                   "config": _plain({"shared": config, "arm": (arm_configs or {}).get(arm)}),
                   "metrics": metrics, "cpu_seconds": round(time.process_time() - t_cpu, 2),
                   "wall_seconds": round(time.perf_counter() - t_wall, 2),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if extra is not None:
                rec["extra"] = extra
            self.append(rec)
            out.append(rec)
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))
            self.log(f"  {part} | {arm} | seed {s}: {shown} ({rec['cpu_seconds']:.0f} s CPU)")
        return out

    def values(self, part: str, metric: str) -> dict[str, dict[int, float]]:
        """``{arm: {seed: value}}`` of the latest record of every (arm, seed) in ``part``; for an arm that
        :meth:`run` saw in this session, only records with that run's configuration hash (records of another
        configuration, e.g. an earlier recipe, never mix into a verdict)."""
        vals: dict[str, dict[int, float]] = {}
        for r in self._records:
            want = self._hashes.get((r["part"], r["arm"]))
            if want is not None and r["config_hash"] != want:
                continue
            if r["part"] == part and metric in r["metrics"] and r["metrics"][metric] is not None:
                vals.setdefault(r["arm"], {})[int(r["seed"])] = float(r["metrics"][metric])
        return vals

    def records(self, part: str | None = None) -> list[dict]:
        return [r for r in self._records if part is None or r["part"] == part]


def _plain(x):
    if is_dataclass(x):
        x = asdict(x)
    return json.loads(json.dumps(x, default=str))


def write_claims(paper: str, claims: Sequence[Claim], study: Study, path: Path | None = None,
                 extra: Sequence[dict] = ()) -> dict:
    """Judge every claim that has records and write ``claims.json`` next to the records. ``extra`` are entries
    already judged (claims whose arms are derived from the records, e.g. a map against a uniform map)."""
    entries = []
    for c in claims:
        vals = study.values(c.part, c.metric)
        if c.baseline in vals and c.method in vals:
            entries.append(judge(c, vals))
    entries += list(extra)
    doc = _finite({"paper": paper, "claims": entries})
    path = path or study.out / "claims.json"
    path.write_text(json.dumps(doc, indent=1, default=float, allow_nan=False) + "\n")
    return doc


def _finite(x):
    """NaN / infinity (e.g. the interval of a single seed) become ``None``: claims.json stays valid JSON for the
    browser (``JSON.parse`` refuses NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def claims_table(doc: Mapping) -> str:
    """A markdown table of a ``claims.json`` document (what notebooks print and READMEs show)."""
    lines = ["| claim | metric | " + "arms (mean ± sd, n) | difference (95% CI) | verdict |", "|---|---|---|---|---|"]
    for c in doc["claims"]:
        arms = "; ".join(f"{a}: {_fmt(s['mean'])} ± {_fmt(s['sd'])} ({s['n']})" for a, s in c["arms"].items())
        d = c.get("difference") or {}
        dtxt = f"{_fmt(d['mean'])} ({_fmt(d['ci95'][0])} to {_fmt(d['ci95'][1])})" if d else ""
        lines.append(f"| {c['claim']} | {c['metric']} | {arms} | {dtxt} | **{c['verdict']}** |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ budget
def plan_steps(default_steps: int, n_runs: int, seconds_per_step: float, budget_min: float | None,
               min_steps: int = 20) -> int:
    """Steps per run: ``default_steps``, or fewer so that ``n_runs`` runs fit ``budget_min`` CPU minutes."""
    if budget_min is None:
        return int(default_steps)
    if budget_min <= 0 or not math.isfinite(budget_min):
        raise ValueError(f"--budget-min must be a positive number of minutes, got {budget_min}")
    fit_steps = int(budget_min * 60 / max(1, n_runs) / max(seconds_per_step, 1e-6))
    return int(max(min_steps, min(default_steps, fit_steps)))


def seconds_per_step(step: Callable[[], Any], n: int = 3, warmup: int = 1) -> float:
    """CPU seconds of one call of ``step`` (median of ``n`` after ``warmup``): calibrates ``plan_steps``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t = time.process_time()
        step()
        times.append(time.process_time() - t)
    times.sort()
    return times[len(times) // 2]


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser, paper: str) -> argparse.ArgumentParser:
    """The options every study shares (each with help text and its default)."""
    p.formatter_class = HelpFormatter
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help="Seeds run for every arm; the protocol asks for at least three.")
    p.add_argument("--resume", action="store_true",
                   help="Keep the records already written with the same configuration and run only the missing "
                        "(arm, seed) pairs.")
    p.add_argument("--budget-min", type=float, default=None,
                   help="CPU minutes for the whole study: the planned steps per run are scaled down to fit "
                        "(default: the full schedule).")
    p.add_argument("--out", default=None,
                   help=f"Folder for records.jsonl and claims.json (default: runs/{paper} in the current folder).")
    p.add_argument("--commit", action="store_true",
                   help=f"Write into the checkout's committed studies/{paper}/ instead of runs/{paper}.")
    p.add_argument("--threads", type=int, default=1,
                   help="Torch threads; one thread keeps the numbers reproducible.")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    p.add_argument("--judge-only", action="store_true",
                   help="Run nothing: write claims.json from the records already written with this configuration "
                        "(arms or seeds without records are left out of the verdicts).")
    return p


def out_dir(args: argparse.Namespace, paper: str) -> Path:
    if args.commit and args.out:
        raise SystemExit("give either --out or --commit, not both")
    if args.commit:
        return committed_dir(paper)
    return Path(args.out) if args.out else default_out(paper)


def open_study(args: argparse.Namespace, paper: str, records_name: str = "records.jsonl") -> Study:
    """Set the thread count and open the records named by the shared options."""
    import torch

    torch.set_num_threads(max(1, int(args.threads)))
    if len(args.seeds) < 3:
        print(f"note: {len(args.seeds)} seed(s); the protocol asks for at least 3 before a verdict of "
              "'reproduced'.")
    out = out_dir(args, paper)
    judge_only = getattr(args, "judge_only", False)
    study = Study(paper, out, seeds=args.seeds, resume=args.resume or judge_only, progress=not args.no_progress,
                  records_name=records_name, run_missing=not judge_only)
    print(f"records: {study.path}")
    return study


def command_line(prog: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, for records and claims (``--out``/``--resume`` dropped)."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out",):
            skip = True
            continue
        if a.startswith("--out=") or a in ("--resume", "--no-progress", "--judge-only"):
            continue
        keep.append(a)
    return (prog + " " + shlex.join(keep)).strip()
