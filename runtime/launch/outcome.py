"""How a worker tells the launcher that started it how it ended: its exit code (``ftc.errors.ExitCode``) and a note.

The note is a small JSON object: ``{"exit_code": 7, "error": "DataInvalid", "message": "..."}``. A worker that fails
with an ftc error writes it with :func:`write_outcome` (atomically, to the path its launcher gave it with
``--outcome``); the launcher reads it back with :func:`read_outcome`, as the error the worker raised. Every launcher
uses this one note: local processes (torch.distributed.run exits 1 whatever its workers' codes were), a container (the
note is in a folder mounted for it) and Ray (which carries exceptions, not files: :func:`outcome_exception` raises the
same note, :func:`outcome_from_exception` finds it).

The note is read as untrusted: only a regular file (never a link, a FIFO or a device), at most ``NOTE_LIMIT`` bytes;
a note that breaks these rules, or is not the JSON above, is a :class:`~ftc.errors.TrainingFailed` that says so.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ftc.errors import ExitCode, FtcError, TrainingFailed

__all__ = [
    "MESSAGE_LIMIT",
    "NOTE_LIMIT",
    "OutcomeNote",
    "WorkerFailed",
    "after_the_end",
    "exceptions_in",
    "failure_of",
    "finished_before",
    "outcome_exception",
    "outcome_from_exception",
    "raise_failure",
    "raise_unless_finished",
    "read_outcome",
    "write_outcome",
]

#: the most bytes of a note that are read (a larger one is refused, not cut)
NOTE_LIMIT = 64 << 10
#: the most characters of a message a note keeps (JSON escapes at most 6 bytes a character: within NOTE_LIMIT)
MESSAGE_LIMIT = 8 << 10


class WorkerFailed(FtcError):
    """The ftc error a worker process ended with, as its outcome note tells it: its exit code, the name of its
    error class (``error_class``) and its message."""

    def __init__(self, message: str, *, exit_code: ExitCode, error_class: str = "FtcError"):
        super().__init__(message)
        self.exit_code = exit_code
        self.error_class = error_class


class OutcomeNote(Exception):
    """A worker's outcome note, raised where the launcher receives exceptions, not files (Ray). Its text shows the
    note between markers to people reading the worker's log; the launcher reads ``note``."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note

    def __str__(self) -> str:
        return f"FTC-ERROR {self.note} FTC-ERROR-END"


def _note(exc: FtcError) -> str:
    message = str(exc)
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + " [...]"
    error_class = getattr(exc, "error_class", type(exc).__name__)  # a WorkerFailed passed on keeps the worker's
    return json.dumps({"exit_code": int(exc.exit_code), "error": error_class, "message": message}, sort_keys=True)


def write_outcome(path: str | Path, exc: FtcError) -> None:
    """Leave the outcome note of ``exc`` at ``path`` for the launcher (a temp file renamed into place: the launcher
    reads all of it or nothing). A note that cannot be written is left out: the launcher then goes by the exit code,
    and the worker has printed its error already."""
    from ftc.stores.atomic import write_text_atomic

    try:
        write_text_atomic(path, _note(exc))
    except (OSError, FtcError):
        pass


def _refused(where: str, why: str) -> TrainingFailed:
    return TrainingFailed(
        f"a training process failed, and its outcome note {where} {why}; its output above says what happened"
    )


def _parse(data: bytes, where: str) -> FtcError:
    """The error a note's bytes describe, or a TrainingFailed saying why they describe none."""
    try:
        note = json.loads(data.decode("utf-8"))
        code = ExitCode(note["exit_code"])
        error_class, message = note.get("error", "FtcError"), note.get("message", "")
        if code == ExitCode.OK or not isinstance(error_class, str) or not isinstance(message, str):
            raise ValueError("unexpected values")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        return _refused(where, f"is not the note a worker writes ({type(exc).__name__})")
    return WorkerFailed(message, exit_code=code, error_class=error_class[:100])


def read_outcome(path: str | Path) -> FtcError | None:
    """The error the worker's note at ``path`` describes (a :class:`WorkerFailed`); None when the worker left no
    note; a :class:`~ftc.errors.TrainingFailed` when what is there is not a note (not a regular file, larger than
    ``NOTE_LIMIT``, not its JSON)."""
    where = f"({path})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        return _refused(where, why)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _refused(where, "is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(NOTE_LIMIT + 1)
    except OSError as exc:
        return _refused(where, f"cannot be read ({exc.strerror or exc})")
    finally:
        os.close(fd)
    if len(data) > NOTE_LIMIT:
        return _refused(where, f"is larger than a note ({NOTE_LIMIT} bytes)")
    return _parse(data, where)


def outcome_exception(exc: FtcError) -> OutcomeNote:
    """``exc``'s outcome note as an exception to raise where the launcher receives exceptions (Ray)."""
    return OutcomeNote(_note(exc))


def outcome_from_exception(exc: BaseException) -> FtcError | None:
    """The error of the outcome note raised somewhere in ``exc`` (its causes, and the workers' failures a Ray error
    holds), or None when no worker raised one."""
    for found in exceptions_in(exc):
        if isinstance(found, OutcomeNote):
            return _parse(str(found.note).encode("utf-8", "replace")[: NOTE_LIMIT + 1], "(raised by a worker)")
    return None


def exceptions_in(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it holds: causes, contexts, the workers' failures of a Ray Train error (and the
    user exception each wraps), the members of an exception group."""
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "_base_exc", None)]
        stack += list((getattr(e, "worker_failures", None) or {}).values())
        stack += list(getattr(e, "exceptions", ()) or ())


#: exit codes ftc gives after reporting an error itself (1 is also Python's for a crash: not among them)
_OWN_CODES = {int(c) for c in ExitCode if c not in (ExitCode.OK, ExitCode.INTERNAL)}


def failure_of(code: int, note: Path | None = None) -> FtcError | None:
    """None when ``code`` is 0; else the error the worker's ``note`` describes or that ``code`` names (the worker
    printed it already: its output is ours), or a generic one for a process that ended without saying why."""
    if code == 0:
        return None
    error = read_outcome(note) if note is not None else None
    if isinstance(error, WorkerFailed):
        error.already_reported = True
        return error
    if error is not None:  # a note that is not one
        return error
    if code in _OWN_CODES:  # a process of ftc's that reported its error itself
        exit_code = ExitCode(code)
        error = FtcError(f"a training process failed ({exit_code.name.lower()}); its output above says why")
        error.exit_code = exit_code
        error.already_reported = True
        return error
    return TrainingFailed(f"a training process failed (exit status {code}); its output above says why")


def raise_failure(code: int, note: Path | None = None) -> None:
    """Raise :func:`failure_of` ``code`` and ``note``, if there is one."""
    error = failure_of(code, note)
    if error is not None:
        raise error


def raise_unless_finished(
    code: int, note: Path | None, output: Path, plan_id: str, *, say: Callable[[str], None]
) -> None:
    """Raise :func:`failure_of` ``code`` and ``note``, unless the run had finished before it (:func:`finished_before`:
    then ``say`` says so and the run stands). For a launcher whose processes (or container) ended with ``code``."""
    error = failure_of(code, note)
    if error is not None and not finished_before(error, output, plan_id, say=say):
        raise error


def after_the_end(error: FtcError, checkpoint: Path, *, files: int) -> str:
    """What a launcher says of ``error`` when it came after the run's last ``checkpoint`` was written and verified
    (its lineage record and ``files`` files): the run's result, and the failure as what it is."""
    return (
        f"warning: a process failed after the run's last checkpoint was written: {error}\n"
        f"    the run is complete: its last checkpoint {checkpoint} verifies (its lineage record and {files} files, "
        "as `ftc lineage verify` checks them); nothing after it is missing but what the failure above names"
    )


def finished_before(error: FtcError, output: Path, plan_id: str, *, say: Callable[[str], None]) -> bool:
    """Whether the run of plan ``plan_id`` into ``output`` had finished when ``error`` stopped it: its last
    checkpoint holds every step and verifies (its lineage record and every file, as ``ftc lineage verify`` checks a
    checkpoint), that record names this plan, and the run's summary.json (written after it) is there. Then ``say``
    reports the failure as one after the run's end (:func:`after_the_end`) and the run stands; else the
    checkpoint's problems, if any, are said and the failure is the run's."""
    from ftc.lineage.verify import checkpoint_problems
    from ftc.runtime.training.checkpoint import is_complete, latest_checkpoint

    last = latest_checkpoint(output)
    try:
        if last is None or not is_complete(last):
            return False
    except (OSError, ValueError, KeyError, FtcError):  # a state file that is not whole: not the run's end
        return False
    record, problems = checkpoint_problems(last)
    if record is None or problems:
        say(f"the run's last checkpoint {last} does not verify:\n    " + "\n    ".join(problems))
        return False
    if record["plan"]["plan_id"] != plan_id:  # not this run's (a run never writes over another plan's)
        return False
    if not _summarized(output, plan_id):  # the run's last output: a failure before it is the run's own
        return False
    say(after_the_end(error, last, files=len(record["checkpoint"]["files"])))
    return True


def _summarized(output: Path, plan_id: str) -> bool:
    """Whether ``output`` holds this plan's summary.json, which a run writes after its last checkpoint."""
    from ftc.spec.reading import NotReadable, finite_json, read_bounded_text

    try:
        summary = finite_json(read_bounded_text(output / "summary.json", limit=1 << 20, what="summary"))
    except (NotReadable, OSError, ValueError, RecursionError):
        return False
    return isinstance(summary, dict) and summary.get("plan_id") == plan_id
