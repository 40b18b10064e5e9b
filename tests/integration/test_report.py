"""`ftc report`: the two-stage seed chain as one HTML page, rendered by a real headless Chromium (Debian's package)
whose every request goes through a proxy the test runs: the page is drawn, holds both loss curves and both
ancestors, and asks the network for nothing."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        if os.environ.get("FTC_TEST_REQUIRE_BROWSER"):  # CI installs Debian's chromium: there, a missing one fails
            pytest.fail("chromium is not installed")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    return CHROMIUM


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def _record(self) -> None:
        _Recorder.seen.append(f"{self.command} {self.path}")
        self.send_error(403)

    do_GET = do_POST = do_HEAD = do_CONNECT = _record

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy():
    """An HTTP proxy on 127.0.0.1 that refuses and records every request it is sent."""
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], _Recorder.seen
    server.shutdown()


#: hosts Chromium itself calls (its updater, clock and sign-in services), with a blank page too, whatever the flags
BROWSER_OWN = {
    "update.googleapis.com", "accounts.google.com", "clients1.google.com", "clients2.google.com",
    "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com", "redirector.gvt1.com",
    "edgedl.me.gvt1.com", "safebrowsingohttpgateway.googleapis.com",
}  # fmt: skip


def _hosts(requests: list[str]) -> set[str]:
    """The host of each request the proxy saw ("CONNECT host:443", "GET http://host/path")."""
    return {re.sub(r"^[A-Z]+ (?:https?://)?([^/:]+).*$", r"\1", r) for r in requests}


def _render(chromium: str, page: Path, proxy_port: int, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--proxy-server=http://127.0.0.1:{proxy_port}",
            "--proxy-bypass-list=<-loopback>", "--window-size=1280,2000", *args, page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_report_of_the_two_stage_chain_renders_offline_with_both_curves_and_ancestors(
    two_stages, ftc, chromium, proxy, tmp_path
):
    page = tmp_path / "report.html"
    r = ftc("report", two_stages / "stage2", "-o", page)
    assert r.code == 0, r.err
    text = page.read_text()
    assert "src=" not in text and "href=" not in text and "<script" not in text  # nothing to fetch, nothing to run

    port, seen = proxy
    shot = tmp_path / "report.png"
    rendered = _render(chromium, page, port, tmp_path, f"--screenshot={shot}")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _render(chromium, page, port, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _hosts(seen) <= BROWSER_OWN, seen  # the page asked for nothing

    # the check can fail: a page that does fetch a font and an image is caught by the proxy
    control = tmp_path / "control.html"
    control.write_text(
        '<html><head><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Inter"></head>'
        '<body><img src="http://ftc-test.invalid/pixel.png"></body></html>'
    )
    assert _render(chromium, control, port, tmp_path, "--dump-dom").returncode == 0
    assert {"fonts.googleapis.com", "ftc-test.invalid"} <= _hosts(seen) - BROWSER_OWN

    html = dom.stdout
    assert "train loss" in html and "eval loss" in html and html.count("<path d=") >= 2  # both curves
    assert "adapter stage1/best" in html and "base model " in html  # both ancestors
    assert "adapter-continued" in html and "verified" in html
    assert html.count("re-hashed at") == 2  # stage 1 and the base, found and re-hashed here


def test_report_says_which_ancestor_changed(two_stages, ftc, tmp_path):
    stage1 = (two_stages / "stage1" / "best").resolve()
    (stage1 / "adapter_config.json").write_text("{}")
    page = tmp_path / "report.html"
    r = ftc("report", two_stages / "stage2", "-o", page)
    assert r.code == 0, r.err  # the page is how an auditor sees what broke
    text = page.read_text()
    assert "does not verify" in text and "adapter_config.json" in text
    assert f"changed ({stage1})" in text
