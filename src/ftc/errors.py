"""Errors a user can act on, and the one place that maps them to exit codes.

Every user-facing failure raises an :class:`FtcError` subclass. The CLI prints its message (no traceback unless
``--debug``) and exits with its ``exit_code``. A bug is anything else, and exits 1 with a traceback.
"""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DataInvalid",
    "EngineUnavailable",
    "ExitCode",
    "FtcError",
    "ImageBuildFailed",
    "INPUT_EXIT_CODES",
    "InputChanged",
    "InputUnresolvable",
    "LineageBroken",
    "NotReproduced",
    "PlanInvalid",
    "Problem",
    "SpecInvalid",
    "StorageFailed",
    "TrainingFailed",
    "UsageError",
    "report",
]


class ExitCode(enum.IntEnum):
    """Exit codes of the ``ftc`` command, documented in docs/cli.md."""

    OK = 0
    INTERNAL = 1  # a bug: please report it with the --debug traceback
    USAGE = 2  # bad command line (unknown option, missing argument, file given where a folder is needed)
    SPEC_INVALID = 3  # the job spec is invalid; every problem is listed
    INPUT_UNRESOLVABLE = 4  # an input (weights, data, config) cannot be found: no such file, bucket, object, rev
    PLAN_INVALID = 5  # a plan file does not match plan.schema.json or its plan_id
    INPUT_CHANGED = 6  # at run time, an input no longer matches the digest pinned in the plan
    DATA_INVALID = 7  # at run time, training data that cannot be used (an example longer than context_length)
    TRAINING_FAILED = 8  # training stopped with an error (a worker crashed, the loss became NaN)
    INPUT_DENIED = 9  # a store refused the credentials in the environment, or there are none
    INPUT_UNREACHABLE = 10  # a store or repository did not answer (network, endpoint): trying again may help
    INPUT_UNCONFIGURED = 11  # where to read an input from is not set up (no DVC remote at that rev, no client library)
    LINEAGE_BROKEN = 12  # a checkpoint's files or lineage record (or a parent's) no longer match the record
    ENGINE_UNAVAILABLE = 13  # no container engine answers, or it cannot give the run what it asks (GPUs)
    IMAGE_BUILD_FAILED = 14  # `ftc image build`: a step of the Dockerfile failed (its output says which)
    STORAGE_FAILED = 15  # the output folder cannot be written: read-only, full, or not this user's
    NOT_REPRODUCED = 16  # `ftc reproduce`: the rerun's weights differ from the checkpoint's beyond the tolerance
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: the last checkpoint is intact; resume with `ftc run PLAN --resume`


_UNSET = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec or an input: where it is, what was found, and what to do.

    ``where`` is a JSON path into the spec (``$.lora_config.r``); ``file``/``line`` point at the text a user
    edits (the spec file, or a data file for a bad JSONL line).
    """

    where: str
    message: str
    hint: str = ""
    file: str | None = None
    line: int | None = None
    value: Any = field(default=_UNSET, compare=False)
    #: "spec" for a mistake in the spec itself; for an input that cannot be had, why (a key of INPUT_EXIT_CODES)
    kind: str = "spec"

    def render(self) -> str:
        location = ""
        if self.file:
            location = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = f"{location}{self.where}: {self.message}"
        if self.value is None or isinstance(self.value, (str, int, float, bool)):
            text += f" (found: {json.dumps(self.value, ensure_ascii=False)})"
        if self.hint:
            text += f"\n    fix: {self.hint}"
        return text


class FtcError(Exception):
    """Base of every user-facing error. ``str(error)`` is what the user sees."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(FtcError):
    exit_code = ExitCode.USAGE


class PlanInvalid(FtcError):
    exit_code = ExitCode.PLAN_INVALID


#: why an input cannot be had -> the exit code that says so
INPUT_EXIT_CODES = {
    "input": ExitCode.INPUT_UNRESOLVABLE,  # not found
    "denied": ExitCode.INPUT_DENIED,
    "unreachable": ExitCode.INPUT_UNREACHABLE,
    "unconfigured": ExitCode.INPUT_UNCONFIGURED,
    "lineage": ExitCode.LINEAGE_BROKEN,  # a parent checkpoint that no longer matches its own lineage record
}


class InputUnresolvable(FtcError):
    """An input that cannot be had; ``reason`` (a key of INPUT_EXIT_CODES) picks the exit code."""

    exit_code = ExitCode.INPUT_UNRESOLVABLE

    def __init__(self, message: str, reason: str = "input"):
        super().__init__(message)
        self.reason = reason
        self.exit_code = INPUT_EXIT_CODES.get(reason, ExitCode.INPUT_UNRESOLVABLE)


class InputChanged(FtcError):
    exit_code = ExitCode.INPUT_CHANGED
    gone = False  # the pinned bytes are no longer there at all (a deleted version): a reproduction cannot fetch them


class LineageBroken(FtcError):
    exit_code = ExitCode.LINEAGE_BROKEN


class EngineUnavailable(FtcError):
    exit_code = ExitCode.ENGINE_UNAVAILABLE


class ImageBuildFailed(FtcError):
    exit_code = ExitCode.IMAGE_BUILD_FAILED


class StorageFailed(FtcError):
    exit_code = ExitCode.STORAGE_FAILED


class DataInvalid(FtcError):
    exit_code = ExitCode.DATA_INVALID


class NotReproduced(FtcError):
    exit_code = ExitCode.NOT_REPRODUCED


class TrainingFailed(FtcError):
    exit_code = ExitCode.TRAINING_FAILED


class SpecInvalid(FtcError):
    """A spec with one or more problems; all of them are reported at once.

    The exit code says invalid spec when any problem is in the spec itself; when every problem is an input that
    cannot be had, it says why (not found, denied, unreachable, not configured; not found when the reasons differ).
    """

    def __init__(self, problems: list[Problem], source: str = "spec"):
        self.problems = list(problems)
        self.source = source
        kinds = {p.kind for p in self.problems}
        if "spec" in kinds:
            self.exit_code = ExitCode.SPEC_INVALID
        else:
            # ("changed": an object replaced while compiling read it: not found as listed)
            self.exit_code = (
                INPUT_EXIT_CODES.get(kinds.pop(), ExitCode.INPUT_UNRESOLVABLE)
                if len(kinds) == 1
                else ExitCode.INPUT_UNRESOLVABLE
            )
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"{source}: {len(self.problems)} {noun}:"]
        # the spec's own lines first, in file order, then the data and input files
        ordered = sorted(self.problems, key=lambda p: (p.file != source, p.file or "", p.line or 0))
        lines += [p.render() for p in ordered]
        super().__init__("\n".join(lines))


def report(exc: BaseException, *, debug: bool = False) -> ExitCode:
    """Say what went wrong, the way every entry point of ftc does, and return the exit code that says so.

    The one place where exceptions become exit codes: a user-facing error prints its message (with a traceback
    only when ``debug``), an interruption says how to continue, and anything else is a bug: its traceback is
    printed, and the exit code is 1.
    """
    import traceback

    if isinstance(exc, KeyboardInterrupt):
        print(
            "interrupted: checkpoints written so far are intact; continue with `ftc run PLAN --resume`", file=sys.stderr
        )
        return ExitCode.INTERRUPTED
    if isinstance(exc, FtcError):
        if debug:
            traceback.print_exception(exc)
        if not getattr(exc, "already_reported", False):  # a training process printed it already
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return ExitCode(exc.exit_code)
    traceback.print_exception(exc)
    print("error: an internal error in ftc (the traceback above); please report it", file=sys.stderr, flush=True)
    return ExitCode.INTERNAL
