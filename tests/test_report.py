"""``workbench report``: one offline HTML page from ``<studies>/<paper>/claims.json``.

The claims are made here with the protocol (records -> ``protocol.write_claims``), so their verdicts are known:
a clear paired improvement over three seeds (reproduced), an improvement within noise (partly) and a comparison
whose baseline is not halfway from chance (not reproduced). The page must show every claim's text and verdict,
escape what it shows, and load nothing from the network (plotly's JavaScript inlined, no ``<script src>``).
"""
from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import pytest

from workbench.studies import protocol


def _study(root, paper, values):
    """Records ``values[arm][seed]`` of metric ``acc`` in part ``main`` under ``root/paper``."""
    study = protocol.Study(paper, root / paper, seeds=(0, 1, 2), progress=False, log=lambda *_: None)
    for arm, by_seed in values.items():
        study.run("main", {arm: (lambda s, by_seed=by_seed: {"acc": by_seed[s]})}, {"k": 1})
    return study


@pytest.fixture
def studies(tmp_path):
    root = tmp_path / "my studies"
    a = _study(root, "swin_v2", {"V1 table": {0: 0.60, 1: 0.62, 2: 0.61},
                                 "V2 <log-CPB>": {0: 0.80, 1: 0.83, 2: 0.81}})
    claims_a = [
        protocol.Claim("cpb-transfer", "Log-spaced CPB transfers better than the V1 table & bicubic <resize>",
                       "+1.1 top-1", "acc", "higher", "V1 table", "V2 <log-CPB>", "main", chance=0.1,
                       command="workbench train swinv2-study --commit"),
        protocol.Claim("cpb-lower", "The V1 table has the lower accuracy", "n/a", "acc", "lower",
                       "V1 table", "V2 <log-CPB>", "main", chance=0.1, command="workbench train swinv2-study"),
    ]
    doc_a = protocol.write_claims("swin_v2", claims_a, a)
    b = _study(root, "dnl", {"NL": {0: 0.20, 1: 0.22, 2: 0.21}, "DNL": {0: 0.25, 1: 0.26, 2: 0.24}})
    c = _study(root / "extra", "cbn", {"BN": {0: 0.90, 1: 0.91, 2: 0.92}, "CBN": {0: 0.905, 1: 0.90, 2: 0.93}})
    doc_b = protocol.write_claims("dnl", [protocol.Claim(
        "dnl-miou", "DNL segments better than NL", "+1.4 mIoU", "acc", "higher", "NL", "DNL", "main", chance=0.1,
        command="workbench train dnl-study --commit")], b)
    doc_c = protocol.write_claims("cbn", [protocol.Claim(
        "cbn-small-batch", "CBN closes the small-batch gap", "+2.9 top-1", "acc", "higher", "BN", "CBN", "main",
        chance=0.1, command="workbench train cbn-study --commit")], c)
    (root / "cbn").mkdir()
    (root / "cbn" / "claims.json").write_text(json.dumps(doc_c))
    return root, {"swin_v2": doc_a, "dnl": doc_b, "cbn": doc_c}


def test_the_protocol_gives_the_verdicts_this_test_relies_on(studies):
    _, docs = studies
    verdicts = {c["id"]: c["verdict"] for d in docs.values() for c in d["claims"]}
    assert verdicts == {"cpb-transfer": "reproduced", "cpb-lower": "not reproduced",
                        "dnl-miou": "not reproduced",      # NL at 0.21 is not halfway from chance 0.1 to 1
                        "cbn-small-batch": "partly"}       # +0.005 mean, within 2 SE
    cpb = next(c for c in docs["swin_v2"]["claims"] if c["id"] == "cpb-transfer")
    assert cpb["difference"]["mean"] == pytest.approx(0.2033333, abs=1e-6) and cpb["difference"]["paired"]


def test_report_command_writes_an_offline_page_with_every_claim(studies, tmp_path):
    root, docs = studies
    out = tmp_path / "out dir" / "x.html"
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "report", "--studies", str(root), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for doc in docs.values():
        for c in doc["claims"]:
            assert html.escape(c["claim"]) in page, c["claim"]
            block = page[page.index(f'id="{c["id"]}"'):]
            block = block[:block.index('<div class="plot"')]
            assert f">{c['verdict']}</span>" in block
            assert html.escape(c["why"]) in block and html.escape(c["command"]) in block
    assert "<resize>" not in page and "&lt;resize&gt;" in page          # claim text is escaped
    assert "Totals: 1 reproduced, 1 partly, 2 not reproduced" in page
    # paper order of the report, then the rest
    assert page.index("Swin Transformer V2") < page.index("Cross-Iteration") < page.index("Disentangled")


def test_report_loads_nothing_from_the_network(studies, tmp_path):
    from workbench.report import write_report

    root, docs = studies
    page = write_report(tmp_path / "r.html", studies=root).read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, flags=re.S)
    assert scripts and all("src" not in attrs for attrs, _ in scripts)
    assert not re.search(r"<(link|img|iframe)\b[^>]*(href|src)\s*=", page)
    # plotly's own bundle is inlined once; outside it there is no http(s) URL at all
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert page.count(bundle) == 1
    rest = page.replace(bundle, "")
    assert not re.search(r"https?://", rest), re.findall(r"https?://\S{0,40}", rest)[:5]
    # one plot per claim, drawn from the claim's arms
    n = sum(len(d["claims"]) for d in docs.values())
    assert len(re.findall(r"Plotly\.newPlot\('fig\d+'", page)) == n


def test_report_without_claims_names_every_paper_as_not_judged(tmp_path):
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "report", "--studies", str(tmp_path), "--out",
                        str(tmp_path / "x.html")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "x.html").read_text()
    from workbench.report import PAPERS

    pending = page[page.index("Not judged yet"):]
    pending = pending[:pending.index("</p>")]
    for title, _venue in PAPERS.values():
        assert html.escape(title) in pending


def test_committed_report_matches_the_committed_claims():
    """docs/report.html (linked from the README) shows every committed claim with its current verdict and numbers:
    regenerate it with `workbench report --out docs/report.html` after a study changes."""
    from pathlib import Path

    from workbench import report

    page = (Path(__file__).resolve().parents[1] / "docs" / "report.html").read_text()
    docs = report.load_claims()
    assert docs
    for d in docs.values():
        for c in d["claims"]:
            start = page.index(f'<div class="claim" id="{html.escape(c["id"])}">')
            block = page[start:page.index("</div>\n</div>", start)]
            assert html.escape(c["claim"]) in block and html.escape(c["verdict"]) in block, c["id"]
            for s in c["arms"].values():
                assert report._num(s["mean"]) in block, (c["id"], s)
