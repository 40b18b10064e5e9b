"""What a tracker's client says reaches the user through the one redaction: its exceptions (redacted whole before
they are cut to length) and the lines its library logs (MLflow's, urllib3's)."""

from __future__ import annotations

import io
import logging

from ftc.runtime.training.trackers import Tracker, redact_library_logs


class _Failing:
    where = "MLflow at http://***@host"

    def __init__(self, message: str):
        self.message = message

    def start(self, *args):
        raise RuntimeError(self.message)


def test_a_failure_message_cut_inside_a_url_keeps_no_part_of_its_password(capsys):
    # cut at 200 characters: 186 + "http://u:" ends at 195, so an unredacted cut would keep "SECRE"
    tracker = Tracker(_Failing("x" * 185 + " http://u:SECRETPASSWORD@host/api/2.0/runs"))
    tracker._call("start")
    err = capsys.readouterr().err
    assert "failed (RuntimeError: " in err and "its run stops here" in err
    assert "SECRE" not in err
    assert tracker.broken


def test_a_librarys_log_lines_pass_through_redact_on_its_logger_and_its_own_handler():
    stream = io.StringIO()
    library = logging.getLogger("ftc-tests-library")
    handler = logging.StreamHandler(stream)
    library.addHandler(handler)
    library.propagate = False
    try:
        redact_library_logs("ftc-tests-library")
        redact_library_logs("ftc-tests-library")  # once is enough: no second filter
        assert len(handler.filters) == 1 and len(library.filters) == 1
        library.warning("View run at %s", "http://alice:p@ss/w0rd@mlflow:5000/#/runs/1")
        logging.getLogger("ftc-tests-library.child").warning("retrying http://bob:hunter2@host/x")  # via the handler
        logged = stream.getvalue()
        assert "View run at http://***@mlflow:5000/#/runs/1" in logged and "retrying http://***@host/x" in logged
        assert "p@ss" not in logged and "hunter2" not in logged
    finally:
        library.removeHandler(handler)
