"""A worker's outcome note (``ftc.runtime.launch.outcome``): what every launcher reads to learn how a worker ended. It
round-trips an ftc error, and a note that is not one (too large, not a regular file, not its JSON) is a training
failure that says so, never a crash or a hang."""

from __future__ import annotations

import json
import os
import threading

import pytest

from ftc.errors import DataInvalid, ExitCode, FtcError, InputUnresolvable, TrainingFailed
from ftc.runtime.launch.outcome import (
    MESSAGE_LIMIT,
    NOTE_LIMIT,
    WorkerFailed,
    outcome_exception,
    outcome_from_exception,
    raise_failure,
    read_outcome,
    write_outcome,
)


def test_a_note_gives_back_the_workers_exit_code_error_class_and_message(tmp_path):
    note = tmp_path / "outcome.json"
    write_outcome(note, InputUnresolvable("s3://b/k: access denied", reason="denied"))
    error = read_outcome(note)
    assert isinstance(error, WorkerFailed)
    assert error.exit_code == ExitCode.INPUT_DENIED
    assert error.error_class == "InputUnresolvable" and str(error) == "s3://b/k: access denied"
    assert json.loads(note.read_text()) == {
        "error": "InputUnresolvable",
        "exit_code": int(ExitCode.INPUT_DENIED),
        "message": "s3://b/k: access denied",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["outcome.json"]  # written through a temp file, renamed


def test_a_worker_failure_passed_on_keeps_the_first_workers_error_class(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_outcome(first, DataInvalid("example 3 is longer than context_length 16"))
    write_outcome(second, read_outcome(first))  # a container's launcher passes its workers' outcome on
    error = read_outcome(second)
    assert (error.error_class, error.exit_code) == ("DataInvalid", ExitCode.DATA_INVALID)


def test_no_note_is_none(tmp_path):
    assert read_outcome(tmp_path / "outcome.json") is None


def test_a_long_message_is_cut_so_that_the_note_stays_readable(tmp_path):
    note = tmp_path / "outcome.json"
    write_outcome(note, TrainingFailed("\x01" * (MESSAGE_LIMIT * 3)))  # each escaped to six bytes of JSON
    assert note.stat().st_size <= NOTE_LIMIT
    error = read_outcome(note)
    assert isinstance(error, WorkerFailed) and str(error).endswith(" [...]")


def _refused(path) -> str:
    error = read_outcome(path)
    assert isinstance(error, TrainingFailed) and not isinstance(error, WorkerFailed), error
    assert error.exit_code == ExitCode.TRAINING_FAILED
    assert str(path) in str(error) and "a training process failed" in str(error)
    return str(error)


def test_an_oversize_note_is_refused(tmp_path):
    note = tmp_path / "outcome.json"
    note.write_text(json.dumps({"exit_code": 7, "error": "DataInvalid", "message": "x" * NOTE_LIMIT}))
    assert "larger than a note" in _refused(note)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "\xff\xfe",
        "[7]",
        '{"error": "DataInvalid"}',
        '{"exit_code": 0}',
        '{"exit_code": 999}',
        '{"exit_code": "seven"}',
        '{"exit_code": 7, "message": ["not", "text"]}',
        '{"exit_code": 7, "error": 3}',
    ],
)
def test_a_garbled_note_is_a_training_failure_that_says_so(tmp_path, text):
    note = tmp_path / "outcome.json"
    note.write_bytes(text.encode("latin-1"))
    assert "is not the note a worker writes" in _refused(note)


def test_a_fifo_at_the_notes_name_is_refused_without_waiting_for_a_writer(tmp_path):
    note = tmp_path / "outcome.json"
    os.mkfifo(note)
    found = []
    reader = threading.Thread(target=lambda: found.append(_refused(note)), daemon=True)
    reader.start()
    reader.join(10)
    assert found and "is not a regular file" in found[0]


def test_a_link_at_the_notes_name_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"exit_code": 7}')
    note = tmp_path / "outcome.json"
    note.symlink_to(target)
    assert "symbolic link" in _refused(note)


def test_a_folder_at_the_notes_name_is_refused(tmp_path):
    (tmp_path / "outcome.json").mkdir()
    assert "not a regular file" in _refused(tmp_path / "outcome.json")


def test_raise_failure_reports_the_note_as_already_printed_and_keeps_its_exit_code(tmp_path):
    note = tmp_path / "outcome.json"
    raise_failure(0, note)  # success: nothing, note or not
    write_outcome(note, DataInvalid("too long"))
    with pytest.raises(WorkerFailed) as caught:
        raise_failure(1, note)  # torch.distributed.run exits 1 whatever its workers' codes were
    assert caught.value.exit_code == ExitCode.DATA_INVALID and caught.value.already_reported


def test_raise_failure_without_a_note_goes_by_the_exit_code(tmp_path):
    with pytest.raises(FtcError) as caught:
        raise_failure(int(ExitCode.INPUT_CHANGED), tmp_path / "none.json")
    assert caught.value.exit_code == ExitCode.INPUT_CHANGED and caught.value.already_reported
    with pytest.raises(TrainingFailed, match=r"exit status 1\)") as caught:
        raise_failure(1)  # a crash: nobody reported anything
    assert not getattr(caught.value, "already_reported", False)


def test_raise_failure_with_a_garbled_note_says_so(tmp_path):
    note = tmp_path / "outcome.json"
    note.write_text("{")
    with pytest.raises(TrainingFailed, match="is not the note a worker writes") as caught:
        raise_failure(int(ExitCode.DATA_INVALID), note)
    assert not getattr(caught.value, "already_reported", False)  # printed: nobody said this yet


class _RayLikeWrapper(Exception):
    """What Ray Train does with a worker's exception: it keeps it as ``_base_exc`` of a group error's failures."""

    def __init__(self, base: BaseException):
        super().__init__("Traceback (most recent call last): ...")
        self._base_exc = base
        self.worker_failures = {}


def test_the_note_crosses_as_an_exception_where_files_do_not_and_is_found_in_rays_wrapping():
    sent = outcome_exception(DataInvalid("example 3 is longer than context_length 16"))
    assert str(sent).startswith("FTC-ERROR {") and str(sent).endswith("} FTC-ERROR-END")  # as the worker's log shows
    carried = type(sent)(*sent.args)  # rebuilt from its arguments, as a process boundary does
    group = _RayLikeWrapper(Exception("worker group failed"))
    group.worker_failures = {0: _RayLikeWrapper(carried)}
    try:
        raise RuntimeError("the Ray job failed") from group
    except RuntimeError as exc:
        error = outcome_from_exception(exc)
    assert isinstance(error, WorkerFailed) and error.exit_code == ExitCode.DATA_INVALID
    assert str(error) == "example 3 is longer than context_length 16"
    assert outcome_from_exception(RuntimeError("no note in here")) is None


def test_a_garbled_note_raised_by_a_worker_is_a_training_failure():
    error = outcome_from_exception(type(outcome_exception(DataInvalid("x")))("{not json"))
    assert isinstance(error, TrainingFailed) and "is not the note a worker writes" in str(error)


def test_a_worker_that_fails_leaves_its_note_where_its_launcher_said(tmp_path):
    import subprocess
    import sys

    note = tmp_path / "scratch" / "outcome.json"
    note.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    ended = subprocess.run(
        [sys.executable, "-m", "ftc.runtime", str(tmp_path / "no-plan.json"), "--outcome", str(note)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ended.returncode == ExitCode.USAGE, ended.stderr
    error = read_outcome(note)
    assert isinstance(error, WorkerFailed) and error.exit_code == ExitCode.USAGE
    assert error.error_class == "NotReadable"  # the reader's own error class (a usage error) crosses with it
    assert "no-plan.json" in str(error) and str(error) in ended.stderr
