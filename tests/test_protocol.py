"""The study protocol: statistics against scipy, verdict rules, records, resume and the claims.json schema."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from workbench.studies import protocol


def test_summarize_matches_numpy():
    v = [0.61, 0.7, 0.65, 0.58]
    s = protocol.summarize(v)
    assert s["n"] == 4 and s["mean"] == pytest.approx(np.mean(v)) and s["sd"] == pytest.approx(np.std(v, ddof=1))
    assert protocol.summarize([0.3]) == {"mean": 0.3, "sd": 0.0, "n": 1}


def test_paired_difference_matches_scipy_t_interval():
    m = {0: 0.81, 1: 0.79, 2: 0.84, 3: 0.80}
    b = {0: 0.75, 1: 0.76, 2: 0.77, 3: 0.78}
    d = protocol.difference(m, b)
    diffs = np.array([m[s] - b[s] for s in m])
    se = diffs.std(ddof=1) / math.sqrt(4)
    lo, hi = stats.t.interval(0.95, 3, loc=diffs.mean(), scale=se)
    assert d["paired"] and d["n"] == 4
    assert d["mean"] == pytest.approx(diffs.mean()) and d["se"] == pytest.approx(se)
    assert d["ci95"] == pytest.approx([lo, hi])


def test_unpaired_difference_uses_welch_se():
    m, b = {10: 0.9, 11: 0.8, 12: 0.85}, {0: 0.7, 1: 0.6}
    d = protocol.difference(m, b)
    se = math.sqrt(np.var(list(m.values()), ddof=1) / 3 + np.var(list(b.values()), ddof=1) / 2)
    assert not d["paired"] and d["se"] == pytest.approx(se)


def _claim(**kw):
    base = dict(id="c", claim="x", paper_value="p", metric="acc", direction="higher", baseline="B", method="M",
                part="p", chance=0.1, perfect=1.0)
    base.update(kw)
    return protocol.Claim(**base)


def test_verdicts_follow_the_two_se_rule():
    clear = {"B": {0: 0.70, 1: 0.71, 2: 0.69}, "M": {0: 0.80, 1: 0.82, 2: 0.81}}
    assert protocol.judge(_claim(), clear)["verdict"] == "reproduced"
    noisy = {"B": {0: 0.70, 1: 0.71, 2: 0.69}, "M": {0: 0.80, 1: 0.62, 2: 0.72}}
    j = protocol.judge(_claim(), noisy)
    assert j["verdict"] == "partly" and "within 2 SE" in j["why"]
    wrong = {"B": {0: 0.80, 1: 0.81, 2: 0.79}, "M": {0: 0.70, 1: 0.72, 2: 0.71}}
    assert protocol.judge(_claim(), wrong)["verdict"] == "not reproduced"
    # "lower is better" flips the sign
    assert protocol.judge(_claim(direction="lower"), wrong)["verdict"] == "reproduced"
    # two seeds are never enough for "reproduced"
    two = {"B": {0: 0.70, 1: 0.71}, "M": {0: 0.80, 1: 0.82}}
    assert protocol.judge(_claim(), two)["verdict"] == "partly"


def test_a_baseline_below_halfway_voids_the_comparison():
    weak = {"B": {0: 0.30, 1: 0.32, 2: 0.31}, "M": {0: 0.80, 1: 0.82, 2: 0.81}}
    j = protocol.judge(_claim(), weak)
    assert j["verdict"] == "not reproduced" and "does not count" in j["why"]
    # halfway from 0.1 to 1.0 is 0.55: a baseline at 0.56 counts
    ok = {"B": {0: 0.56, 1: 0.56, 2: 0.56}, "M": {0: 0.80, 1: 0.82, 2: 0.81}}
    assert protocol.judge(_claim(), ok)["verdict"] == "reproduced"
    # per-arm levels: the check can apply to another arm (here "T") with its own chance
    j = protocol.judge(_claim(baselines={"T": (1 / 7, 1.0)}), {**weak, "T": {0: 0.9, 1: 0.9, 2: 0.9}})
    assert j["verdict"] == "reproduced"


def test_margin_turns_the_claim_into_non_inferiority():
    close = {"B": {0: 0.80, 1: 0.81, 2: 0.82}, "M": {0: 0.795, 1: 0.806, 2: 0.816}}
    assert protocol.judge(_claim(), close)["verdict"] == "not reproduced"
    j = protocol.judge(_claim(margin=0.01), close)
    assert j["verdict"] == "reproduced" and j["margin"] == 0.01


def test_study_records_resume_and_claims_schema(tmp_path):
    calls = []

    def arm(value):
        def run(seed):
            calls.append((value, seed))
            return {"acc": value + 0.01 * seed, "_extra": {"curve": [1, 2]}}
        return run

    study = protocol.Study("demo", tmp_path, seeds=(0, 1, 2), progress=False, log=lambda *_: None)
    study.run("part", {"B": arm(0.7), "M": arm(0.8)}, {"steps": 10})
    assert len(calls) == 6
    # a second run with the same configuration trains nothing; a changed configuration re-runs
    again = protocol.Study("demo", tmp_path, seeds=(0, 1, 2), progress=False, log=lambda *_: None)
    again.run("part", {"B": arm(0.7), "M": arm(0.8)}, {"steps": 10})
    assert len(calls) == 6
    again.run("part", {"B": arm(0.7)}, {"steps": 20})
    assert len(calls) == 9
    # a line cut off by a kill is ignored, the others are kept
    with open(again.path, "a") as f:
        f.write('{"part": "part", "arm": "M", "se')
    third = protocol.Study("demo", tmp_path, seeds=(0, 1, 2), progress=False, log=lambda *_: None)
    assert len(third.records()) == 9
    doc = protocol.write_claims("demo", [_claim(part="part")], third)
    on_disk = json.loads((tmp_path / "claims.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    (c,) = on_disk["claims"]
    for key in ("id", "claim", "paper_value", "metric", "direction", "chance", "perfect", "arms", "baseline", "method",
                "verdict", "why", "command"):
        assert key in c
    assert c["arms"]["M"]["n"] == 3 and c["arms"]["M"]["mean"] == pytest.approx(0.81)
    assert c["verdict"] == "reproduced"
    rec = third.records("part")[0]
    assert rec["extra"] == {"curve": [1, 2]} and "cpu_seconds" in rec and rec["config_hash"]


def test_plan_steps_fits_the_budget():
    assert protocol.plan_steps(1000, 10, 0.1, None) == 1000
    assert protocol.plan_steps(1000, 10, 0.1, 1.0) == 60          # 60 s / 10 runs / 0.1 s per step
    assert protocol.plan_steps(1000, 10, 0.1, 1000.0) == 1000     # never more than planned
    with pytest.raises(ValueError):
        protocol.plan_steps(1000, 10, 0.1, -1)


def test_command_line_drops_output_options():
    cmd = protocol.command_line("workbench train x", ["--out", "/tmp/y", "--seeds", "0", "1", "2", "--resume"])
    assert cmd == "workbench train x --seeds 0 1 2"


def test_records_of_another_format_are_not_protocol_runs(tmp_path):
    """A records file that also holds lines of an older format (same part names, no arm/seed/config hash) is
    read without error, and only the protocol's own runs count."""
    import json

    from workbench.studies.protocol import Study

    f = tmp_path / "records.jsonl"
    f.write_text(json.dumps({"part": "masking", "name": "old", "acc": 0.5}) + "\n")
    st = Study("x", tmp_path, seeds=(0, 1, 2), progress=False, log=lambda *_: None)
    st.run("masking", {"a": lambda s: {"acc": 0.1 * s}}, {"k": 1})
    assert st.values("masking", "acc") == {"a": {0: 0.0, 1: 0.1, 2: 0.2}}
    assert len(Study("x", tmp_path, progress=False).records("masking")) == 3


def test_judge_only_runs_nothing_and_keeps_what_is_recorded(tmp_path):
    from workbench.studies.protocol import Study

    calls = []

    def arm(seed):
        calls.append(seed)
        return {"acc": 0.5 + seed / 10}

    full = Study("x", tmp_path, seeds=[0, 1], progress=False, log=lambda m: None)
    full.run("p", {"a": arm}, {"steps": 5})
    assert calls == [0, 1]
    logs = []
    judge = Study("x", tmp_path, seeds=[0, 1, 2], progress=False, run_missing=False, log=logs.append)
    out = judge.run("p", {"a": arm, "b": arm}, {"steps": 5})
    assert calls == [0, 1]                                  # nothing ran
    assert sorted((r["arm"], r["seed"]) for r in out) == [("a", 0), ("a", 1)]
    assert "not run (--judge-only)" in logs[0] and "b seed 0" in logs[0]
    assert len(judge.path.read_text().splitlines()) == 2    # nothing appended


def test_values_ignore_records_of_another_configuration(tmp_path):
    from workbench.studies.protocol import Study

    old = Study("x", tmp_path, seeds=[0, 1], progress=False, log=lambda m: None)
    old.run("p", {"a": lambda s: {"acc": 0.1}}, {"steps": 5})
    new = Study("x", tmp_path, seeds=[0, 1], progress=False, log=lambda m: None)
    new.run("p", {"a": lambda s: {"acc": 0.9}}, {"steps": 50})        # a changed recipe: runs again
    assert new.values("p", "acc") == {"a": {0: 0.9, 1: 0.9}}
    judge = Study("x", tmp_path, seeds=[0, 1, 2], progress=False, run_missing=False, log=lambda m: None)
    judge.run("p", {"a": lambda s: {"acc": 0.5}}, {"steps": 50})
    assert judge.values("p", "acc") == {"a": {0: 0.9, 1: 0.9}}
    judge_old = Study("x", tmp_path, seeds=[0, 1], progress=False, run_missing=False, log=lambda m: None)
    judge_old.run("p", {"a": lambda s: {"acc": 0.5}}, {"steps": 5})
    assert judge_old.values("p", "acc") == {"a": {0: 0.1, 1: 0.1}}


def test_claims_json_has_no_nan_even_for_one_seed(tmp_path):
    import json

    from workbench.studies.protocol import Claim, Study, write_claims

    st = Study("x", tmp_path, seeds=[0], progress=False, log=lambda m: None)
    st.run("p", {"a": lambda s: {"acc": 0.8}, "b": lambda s: {"acc": 0.9}}, {})
    c = Claim(id="c", part="p", claim="b beats a", paper_value="-", metric="acc", direction="higher", chance=0.1,
              baseline="a", method="b", command="x")
    write_claims("x", [c], st)
    text = (tmp_path / "claims.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    assert doc["claims"][0]["verdict"] != "reproduced"
