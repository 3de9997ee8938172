"""The claims report in Chromium: served from 127.0.0.1, every claim's figure is drawn by the inlined plotly (no
request leaves the machine: the ``page`` fixture fails the test otherwise), verdicts and commands are shown."""
from __future__ import annotations

import functools
import http.server
import threading

from workbench import report


def test_report_renders_every_claim_offline(page, tmp_path):
    docs = report.load_claims()
    assert docs, "no committed claims.json: run the studies with --commit"
    out = report.write_report(tmp_path / "report.html")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/{out.name}")
        n = sum(len(d["claims"]) for d in docs.values())
        page.wait_for_function(f"document.querySelectorAll('.plot .main-svg').length >= {n}", timeout=60_000)
        assert page.locator(".claim").count() == n
        for d in docs.values():
            for c in d["claims"]:
                block = page.locator(f"[id='{c['id']}']")
                assert block.count() == 1
                text = block.inner_text()
                assert c["verdict"] in text and c["command"].split()[0] in text
    finally:
        server.shutdown()
    assert not errors, errors
