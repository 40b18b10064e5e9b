"""`ftc report`: the two-stage seed chain as one HTML page, rendered by a real headless Chromium (Debian's package)
whose every request goes through a proxy the test runs: the page is drawn, holds both loss curves and both
ancestors, and asks the network for nothing."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def seed_chain(tmp_path_factory) -> Path:
    """The seed guide's picture on examples/guard-classifier: stage 1 three epochs of a new adapter on all linear
    layers, stage 2 three more continuing it (the modules it inherits are those all-linear resolved to); the runs
    folder, holding stage1/ and stage2/."""
    from conftest import REPO, age

    root = tmp_path_factory.mktemp("seed-chain")
    example = root / "examples" / "guard-classifier"
    shutil.copytree(REPO / "examples" / "guard-classifier", example, ignore=shutil.ignore_patterns("smollm2"))
    for stage, edits in (
        (
            "stage1",
            {"target_modules: [q_proj, v_proj]": "target_modules: all-linear", "num_epochs: 8": "num_epochs: 3"},
        ),
        ("stage2", {"num_epochs: 4": "num_epochs: 3"}),
    ):
        spec = example / f"{stage}.yaml"
        text = spec.read_text()
        for old, new in edits.items():
            assert old in text, (stage, old)
            text = text.replace(old, new)
        spec.write_text(text)
    age(example)
    env = {**os.environ, "FTC_CACHE_DIR": str(root / "ftc-cache")}
    for stage in ("stage1", "stage2"):  # each in its own process, as a user runs them
        plan = root / f"{stage}.plan.json"
        for args in (["compile", example / f"{stage}.yaml", "-o", plan], ["run", plan]):
            done = subprocess.run([sys.executable, "-m", "ftc.cli", *map(str, args)], env=env, capture_output=True,
                                  text=True, timeout=600, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "guard"


def _svg(page: str, label: str) -> str:
    return re.search(rf'<svg[^>]*aria-label="{label}".*?</svg>', page, re.S).group(0)


def _curve(chart: str, name: str) -> list[tuple[float, float]]:
    d = re.search(rf'<path d="([^"]*)"[^>]*><title>{name}</title>', chart).group(1)
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+),([\d.]+)", d)]


def test_report_of_the_seed_chain_draws_both_stages_eval_losses_on_one_axis(seed_chain, ftc, chromium, proxy, tmp_path):
    page = tmp_path / "report.html"
    r = ftc("report", seed_chain / "stage2" / "latest", "-o", page)
    assert r.code == 0, r.err
    html = page.read_text()
    losses = _svg(html, "train and eval loss")
    assert "stage 1 · epochs 1–3" in losses and "stage 2 · epochs 4–6" in losses  # the seed's picture: 1-3, 4-6
    first, second = _curve(losses, "stage 1 eval loss"), _curve(losses, "stage 2 eval loss")
    assert len(first) == len(second) == 4  # before training, then after each epoch
    assert second[0] == first[-1]  # stage 2's step 0 is where stage 1 ended (36 steps), at the same loss
    assert first[0][1] < second[-1][1]  # y grows downwards: stage 1 started higher than stage 2 ends
    ticks = [int(t) for t in re.findall(r'text-anchor="middle">(\d+)</text>', losses)]
    assert ticks == [0, 10, 20, 30, 40, 50, 60, 70]  # 36 + 36 steps, round ticks
    assert _curve(losses, "stage 1 train loss") and _curve(losses, "stage 2 train loss")  # both runs' metrics here
    classifier = _svg(html, "classifier metrics")
    assert _curve(classifier, "stage 2 accuracy")[0] == _curve(classifier, "stage 1 accuracy")[-1]
    values = [float(t) for t in re.findall(r'text-anchor="end">([\d.]+)</text>', classifier)]
    assert max(values) <= 1.0 and all(round(v * 10) == round(v * 10, 6) for v in values)  # shares: round, 1 at most
    assert "stage 1</th><td><code>../../runs/guard/stage1/latest</code>: steps 0–36 here (its own 0–36)" in html

    port, _ = proxy
    shot = tmp_path / "report.png"
    rendered = _render(chromium, page, port, tmp_path, f"--screenshot={shot}")
    assert rendered.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rendered.stderr[-2000:]
    dom = _render(chromium, page, port, tmp_path, "--dump-dom").stdout
    assert all(f"stage {n} eval loss" in dom for n in (1, 2)) and "stage 2 · epochs 4–6" in dom


def test_lineage_diff_of_the_seed_chain_counts_inherited_all_linear_modules_as_the_same(seed_chain, ftc):
    r = ftc("lineage", "diff", seed_chain / "stage1" / "latest", seed_chain / "stage2" / "latest")
    assert r.code == 0, r.err
    settings = r.out.split("settings: ")[1].split("environment: ")[0]
    assert "target_modules" not in settings.split("\n  spec.lora_config.target_modules: the same")[0]
    assert (
        '  spec.lora_config.target_modules: the same 14 modules in both ("all-linear" in a, a list of 14 names in b,'
        " resolved in each plan's architecture)"
    ) in settings
    shown = ftc("lineage", "show", seed_chain / "stage2" / "latest")
    assert shown.code == 0 and shown.out.count("  accuracy ") == 2 and "macro PR-AUC" in shown.out
