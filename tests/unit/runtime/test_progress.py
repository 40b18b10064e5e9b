"""Progress: a bar with step, epoch, loss, tokens/s and ETA on a terminal; plain log lines elsewhere."""

from __future__ import annotations

import io
import json

from ftc.runtime.training.progress import CountProgress, MetricsLog, Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_shows_step_epoch_loss_speed_and_eta():
    stream = _Terminal()
    progress = Progress(total_steps=10, done=0, enabled=True, stream=stream)
    for _ in range(3):
        progress.update(epoch=0, loss=1.2345, tokens_per_s=1234.0)
    progress.close()
    screen = stream.getvalue()
    assert "3/10" in screen and "epoch 1 loss 1.2345 1,234 tok/s" in screen and "<" in screen  # tqdm's ETA


def test_off_a_terminal_plain_lines_every_few_percent():
    stream = io.StringIO()
    progress = Progress(total_steps=100, done=0, enabled=True, stream=stream)
    for _ in range(100):
        progress.update(epoch=1, loss=0.5, tokens_per_s=10.0)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[ftc] step 1/100 epoch 2 loss 0.5000 10 tok/s eta")
    assert len(lines) == 21 and lines[-1].startswith("[ftc] step 100/100")


def test_only_the_main_process_reports():
    stream = io.StringIO()
    progress = Progress(total_steps=5, done=0, enabled=False, stream=stream)
    progress.update(epoch=0, loss=1.0, tokens_per_s=1.0)
    progress.note("x")
    assert stream.getvalue() == ""


def test_a_resumed_metrics_log_drops_what_came_after_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"type": "train", "step": s}) + "\n" for s in range(1, 8)))
    log = MetricsLog(path, enabled=True, keep_until_step=4)
    log.write({"type": "train", "step": 5})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_a_line_torn_by_a_kill_does_not_stop_the_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    whole = "".join(json.dumps({"type": "train", "step": s}) + "\n" for s in range(1, 4))
    path.write_text(whole + '{"type": "eval", "st')  # killed in mid-write
    log = MetricsLog(path, enabled=True, keep_until_step=3)
    log.write({"type": "train", "step": 4})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_download_progress_off_a_terminal_is_a_log_line_with_rate_and_eta():
    import io

    from ftc.runtime.training.progress import ByteProgress

    stream = io.StringIO()
    progress = ByteProgress(4_000_000_000, "base_model: downloading", stream=stream, every_s=0.0)
    progress.add(1_000_000_000)
    progress.close()
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("[ftc] base_model: downloading: 1.00 of 4.00 GB, ") and " MB/s, eta " in line


def test_long_work_reports_at_most_once_per_interval_then_how_long_it_took():
    stream = io.StringIO()
    with CountProgress(4, "evaluation (exact match)", "answer", stream=stream, every_s=0.0) as shown:
        for _ in range(4):
            shown.update()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "[ftc] evaluation (exact match): answer 1/4",
        "[ftc] evaluation (exact match): answer 2/4",
        "[ftc] evaluation (exact match): answer 3/4",
        "[ftc] evaluation (exact match): answer 4/4",
    ]
    assert "so far, eta" in lines[0] and ", took " in lines[-1]


def test_work_done_within_the_interval_says_nothing():
    stream = io.StringIO()
    with CountProgress(50, "evaluation (eval loss)", "batch", stream=stream, every_s=60.0) as shown:
        for _ in range(50):
            shown.update()
    assert stream.getvalue() == ""


def test_only_the_main_process_shows_an_evaluations_progress():
    stream = io.StringIO()
    with CountProgress(3, "evaluation", "batch", enabled=False, stream=stream, every_s=0.0) as shown:
        for _ in range(3):
            shown.update()
    assert stream.getvalue() == ""


def test_work_that_fails_does_not_say_it_finished():
    stream = io.StringIO()
    try:
        with CountProgress(3, "evaluation", "answer", stream=stream, every_s=0.0) as shown:
            shown.update()
            raise RuntimeError("stopped")
    except RuntimeError:
        pass
    assert "took" not in stream.getvalue() and "answer 1/3" in stream.getvalue()


def test_on_a_terminal_an_evaluation_has_a_bar_that_is_gone_when_it_ends():
    stream = _Terminal()
    with CountProgress(4, "evaluation (exact match)", "answer", stream=stream, every_s=0.0) as shown:
        for _ in range(4):
            shown.update()
        during = stream.getvalue()
    assert "evaluation (exact match):" in during and "/4 [" in during  # tqdm's bar
    after = stream.getvalue()[len(during) :]
    assert after.strip() == "" and after.endswith("\r") and "[ftc]" not in stream.getvalue()  # cleared, no log


def test_on_a_terminal_quick_work_shows_no_bar():
    stream = _Terminal()
    with CountProgress(4, "evaluation", "answer", stream=stream, every_s=60.0) as shown:
        for _ in range(4):
            shown.update()
    assert stream.getvalue() == ""
