"""tracker.json, read on --resume to continue the interrupted run's tracker run, is outside bytes: anything that is
not a small regular file naming a plain run id for the spec's provider starts a new tracker run, with a warning."""

from __future__ import annotations

import json
import os

import pytest

from ftc.runtime.training.trackers import TRACKER_FILE, interrupted_run


def test_the_run_id_ftc_wrote_is_continued(tmp_path):
    (tmp_path / TRACKER_FILE).write_text(json.dumps({"provider": "mlflow", "run_id": "0f3a9c", "url": "http://x"}))
    assert interrupted_run(tmp_path, "mlflow") == "0f3a9c"


def test_no_file_is_a_new_run_without_a_warning(tmp_path, capsys):
    assert interrupted_run(tmp_path, "mlflow") == ""
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"provider": "wandb", "run_id": "abc"}',  # another provider's run
        b'{"provider": "mlflow", "run_id": "../../etc"}',
        b'{"provider": "mlflow", "run_id": 12}',
        b'{"provider": "mlflow", "run_id": NaN}',
        b"[]",
        b'{"provider": "mlflow", "run_id": "' + b"a" * (70 << 10) + b'"}',  # larger than a tracker file holds
        b"\xff\xfe",
    ],
)
def test_anything_else_is_a_new_run_with_a_warning(tmp_path, capsys, content):
    (tmp_path / TRACKER_FILE).write_bytes(content)
    assert interrupted_run(tmp_path, "mlflow") == ""
    assert "names no mlflow run ftc can continue; the resumed run starts a new one" in capsys.readouterr().err


def test_a_fifo_is_not_read(tmp_path, capsys):
    os.mkfifo(tmp_path / TRACKER_FILE)
    assert interrupted_run(tmp_path, "mlflow") == ""  # returns at once: a FIFO's open does not block
