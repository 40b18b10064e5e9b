"""`ftc report` reads what is beside a checkpoint as outside input: metrics.jsonl bounded and read line by line,
unplottable values as gaps, long curves downsampled, names escaped, and the page says what the record covers."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time

import pytest

from ftc.errors import ExitCode
from ftc.lineage import report, report_charts, report_metrics
from ftc.lineage.report_charts import MAX_POINTS, lttb

from support.records import write_checkpoint

FROM_METRICS = "from the run&#x27;s metrics.jsonl, which the lineage record does not cover (not verified)"


def _run(tmp_path, lines: list[str] | None = None, **record) -> object:
    """A run folder: checkpoints/step-4 (a sealed record) and metrics.jsonl holding ``lines``."""
    run = tmp_path / "run"
    write_checkpoint(run / "checkpoints" / "step-4", **record)
    if lines is not None:
        (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run / "checkpoints" / "step-4"


def _train_paths(page: str) -> list[str]:
    return re.findall(r'<path d="([^"]*)" fill="none" stroke="#3867d6"', page)


def _loss_chart(page: str) -> str:
    return re.search(r'<svg[^>]*aria-label="train and eval loss".*?</svg>', page, re.S).group(0)


def _report(ftc, checkpoint, tmp_path) -> str:
    started = time.monotonic()
    r = ftc("report", checkpoint, "-o", tmp_path / "page.html")
    assert r.code == 0, r.err
    assert time.monotonic() - started < 60
    return (tmp_path / "page.html").read_text()


# ---- LTTB ------------------------------------------------------------------------------------------------------


def test_lttb_keeps_exactly_n_points_the_first_and_the_last():
    points = [(float(i), math.sin(i / 50)) for i in range(10_000)]
    kept = lttb(points, 2000)
    assert len(kept) == 2000 and kept[0] == 0 and kept[-1] == 9999
    assert kept == sorted(set(kept))  # in order, each once


def test_lttb_keeps_a_spike_and_a_dip():
    points = [(float(i), 1.0) for i in range(5000)]
    points[1234] = (1234.0, 50.0)
    points[3210] = (3210.0, -40.0)
    kept = lttb(points, 100)
    assert 1234 in kept and 3210 in kept and len(kept) == 100


@pytest.mark.parametrize("n, expected", [(10, list(range(5))), (5, list(range(5))), (2, [0, 4]), (1, [0])])
def test_lttb_of_few_points_keeps_them(n, expected):
    assert lttb([(float(i), float(i)) for i in range(5)], n) == expected


def test_downsampling_keeps_gaps_between_the_points_kept():
    points = [(float(i), 1.0) for i in range(3000)] + [None] + [(float(i), 2.0) for i in range(3000, 6000)]
    out = report_charts.downsampled(points, 100)
    assert sum(p is not None for p in out) == 100 and out.count(None) == 1
    gap = out.index(None)
    assert out[gap - 1][1] == 1.0 and out[gap + 1][1] == 2.0


# ---- metrics.jsonl ---------------------------------------------------------------------------------------------


def test_unplottable_losses_and_steps_are_gaps_not_a_crash(ftc, tmp_path):
    lines = [json.dumps({"type": "train", "step": i, "loss": 2.0 - i / 10}) for i in range(5)] + [
        '{"type": "train", "step": 5, "loss": 1e400}',
        '{"type": "train", "step": -1e400, "loss": 1.0}',
        '{"type": "train", "step": 7, "loss": NaN}',
        '{"type": "train", "step": 8, "loss": 1' + "0" * 400 + "}",
        '{"type": "train", "step": 1' + "0" * 400 + ', "loss": 1}',
        '{"type": "train", "step": 9, "loss": -Infinity}',
        '{"type": "train", "step": 10, "loss": 0.5}',
        '{"type": "train", "step": 11, "loss": 0.4}',
        '{"type": "train", "step": 12, "loss": 1e300}',
        '{"type": "train", "step": 13, "loss": 0.3}',
    ]
    page = _report(ftc, _run(tmp_path, lines, results={"step": 20, "total_steps": 20}), tmp_path)
    [path] = _train_paths(page)
    assert path.count("M") == 3 and path.count("L") == 5  # 0-4, then 10-11, then 13 alone
    assert not re.search(r"nan|inf", _loss_chart(page), re.I)  # no axis, tick or point of NaN or infinity
    assert FROM_METRICS in page


def test_a_long_curve_is_drawn_with_at_most_2000_points(ftc, tmp_path):
    lines = [json.dumps({"type": "train", "step": i, "loss": 3.0 / (1 + i / 500)}) for i in range(100_000)]
    page = _report(ftc, _run(tmp_path, lines, results={"step": 100_000, "total_steps": 100_000}), tmp_path)
    [path] = _train_paths(page)
    assert len(re.findall(r"[ML]", path)) == MAX_POINTS
    assert len(page) < 200_000


def test_metrics_past_the_read_limit_are_not_read_and_the_page_says_so(ftc, tmp_path, monkeypatch):
    monkeypatch.setattr(report_metrics, "METRICS_LIMIT", 1 << 20)
    lines = [json.dumps({"type": "train", "step": i, "loss": 1.0, "pad": "x" * 100}) for i in range(30_000)]
    page = _report(ftc, _run(tmp_path, lines, results={"step": 30_000, "total_steps": 30_000}), tmp_path)
    assert "the first 1 MiB of its 4 MiB were read" in page
    steps = [int(t) for t in re.findall(r'text-anchor="middle">(\d+)</text>', _loss_chart(page))]
    assert 5000 < max(steps) < 8000  # the first ~6,700 lines, not the 30,000


def test_a_10_mb_metrics_line_is_skipped_unread(ftc, tmp_path):
    lines = [
        '{"type": "train", "step": 1, "loss": 1.0}',
        '{"type": "train", "step": 2, "loss": 0.9, "x": "' + "a" * 10_000_000 + '"}',
        "[" * 60_000 + '"train"',  # deeper than the parser goes, under the line limit
        '{"type": "train", "step": 3, "loss": 0.8}',
    ]
    page = _report(ftc, _run(tmp_path, lines), tmp_path)
    assert "1 line(s) longer than 64 KiB skipped" in page
    [path] = _train_paths(page)
    assert path.count("L") == 1  # steps 1 and 3


@pytest.mark.parametrize("make", ["fifo", "device"])
def test_a_metrics_file_that_is_not_a_regular_file_is_left_out(make, ftc, tmp_path):
    checkpoint = _run(tmp_path)
    metrics = tmp_path / "run" / "metrics.jsonl"
    os.mkfifo(metrics) if make == "fifo" else metrics.symlink_to("/dev/zero")
    # were the FIFO opened to be read to its end, this writer would end the wait (and the time check fail the test)
    unblock = threading.Timer(30, lambda: os.close(os.open(metrics, os.O_WRONLY | os.O_NONBLOCK)))
    unblock.start()
    try:
        page = _report(ftc, checkpoint, tmp_path)
    finally:
        unblock.cancel()
    assert "from the lineage record (its evaluations)" not in page  # the record holds no train losses
    assert "training curve: none recorded" in page


def test_without_metrics_the_train_curve_comes_from_the_record_and_says_so(ftc, tmp_path):
    evals = [{"step": 2, "eval_loss": 1.6, "train_loss": 1.9}, {"step": 4, "eval_loss": 1.5, "train_loss": 1.7}]
    page = _report(ftc, _run(tmp_path, results={"evals": evals}), tmp_path)
    assert "training curve: from the lineage record (its evaluations), verified with it" in page
    assert FROM_METRICS not in page


def test_the_metrics_warning_stands_beside_the_verified_banner(ftc, tmp_path):
    page = _report(ftc, _run(tmp_path, ['{"type": "train", "step": 1, "loss": 1.0}']), tmp_path)
    banner = re.search(r'<div class="sub">(.*?)</div>', page, re.S).group(1)
    assert '<span class="ok">verified</span>' in banner and f"training curve: {FROM_METRICS}" in banner


# ---- the record ------------------------------------------------------------------------------------------------


def test_names_from_the_record_are_escaped_in_the_page(ftc, tmp_path):
    name = "<script>alert(1)</script>\x1b[2J\rverified\u202e"
    page = _report(ftc, _run(tmp_path, model_id=name, checkpoint={"name": "a'b\"c"}), tmp_path)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[2J\\rverified\\u202e" in page
    assert not any(c in page for c in "\x1b\r\u202e")


def test_a_record_with_thousands_of_parents_gives_a_page_of_bounded_size(ftc, tmp_path):
    parents = [{"role": "base_model", "relation": "adapter", "source": {"source": "hub", "uri": f"org/m{i}"},
                "digest": f"sha256:{i:064x}"} for i in range(5000)]  # fmt: skip
    page = _report(ftc, _run(tmp_path, parents=parents), tmp_path)
    assert len(page) < 400_000
    assert f"{5001 - report.MAX_NODES} more node(s) not shown" in page
    assert "not a local folder (published weights, or a store&#x27;s)" in page  # a hub parent: said, not a crash


def test_huge_losses_in_the_record_are_gaps_too(ftc, tmp_path):
    evals = [{"step": 1, "eval_loss": 1e308}, {"step": 2, "eval_loss": 1.0}, {"step": 3, "eval_loss": -1e308}]
    page = _report(ftc, _run(tmp_path, results={"evals": evals, "eval_loss": 1.0}), tmp_path)
    assert not re.search(r"nan|inf", _loss_chart(page), re.I)


def test_a_report_of_a_broken_chain_is_still_exit_12_when_the_record_is_unreadable(ftc, tmp_path):
    checkpoint = _run(tmp_path)
    (checkpoint / "lineage.json").write_text('{"lineage_version": 1, "x": ' + "[" * 300 + "]" * 300 + "}")
    r = ftc("report", checkpoint, "-o", tmp_path / "page.html")
    assert r.code == ExitCode.LINEAGE_BROKEN and "JSON nested more than 272 levels deep" in r.err, r.err


def test_a_100_gb_sparse_metrics_file_without_line_ends_is_read_only_to_the_limit(ftc, tmp_path):
    """New: a line that never ends (a sparse file of zeros) was skipped chunk by chunk to its end."""
    checkpoint = _run(tmp_path, ['{"type": "train", "step": 1, "loss": 1.0}'])
    with open(tmp_path / "run" / "metrics.jsonl", "ab") as f:
        f.write(b'{"x": "')
        f.truncate(100 << 30)
    page = _report(ftc, checkpoint, tmp_path)  # within the time _report allows
    assert "the first 32 MiB of its 102400 MiB were read; 1 line(s) longer than 64 KiB skipped" in page
