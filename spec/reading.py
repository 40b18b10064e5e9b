"""Reading text from outside safely: regular files only, bounded in size, every failure a clear error.

A spec, a plan, a lineage record or a config.json is read whole, so each has a size limit; a FIFO, a device or a
socket would block or never end, and a symlink loop never resolves: each is refused before any byte is read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from ftc.errors import UsageError

__all__ = [
    "ChangedSincePinned",
    "MiB",
    "NotFinite",
    "NotReadable",
    "finite_json",
    "read_bounded_bytes",
    "read_bounded_text",
    "read_pinned_text",
    "regular_file_problem",
]

MiB = 1 << 20

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


class NotReadable(UsageError):
    """A file that cannot be read as text: missing, not a regular file, too large, not UTF-8, a symlink loop."""


def regular_file_problem(path: str | Path, st: os.stat_result) -> str | None:
    """Why ``path`` (whose stat is ``st``) is not a regular file, or None when it is one."""
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{path} is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, not a regular file"


def read_bounded_text(path: str | Path, *, limit: int, what: str, example: str = "", missing_fix: str = "") -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes. ``what`` names it in errors ("spec"),
    ``example`` is a file name to suggest ("job.yaml"), ``missing_fix`` what to do when there is no such file."""
    data = read_bounded_bytes(path, limit=limit, what=what, example=example, missing_fix=missing_fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotReadable(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_bounded_bytes(
    path: str | Path, *, limit: int | None, what: str, example: str = "", missing_fix: str = ""
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` (None: as many as it holds when opened; a file still
    growing is read that far and one byte on). Errors as :func:`read_bounded_text`'s."""
    path = Path(path)
    give = f"give the {what} file" + (f" ({example})" if example else "")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open itself
    except FileNotFoundError:
        raise NotReadable(f"{path}: no such {what} file" + (f"; {missing_fix}" if missing_fix else "")) from None
    except PermissionError:
        raise NotReadable(f"{path}: permission denied; make the {what} file readable by this user") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotReadable(f"{path}: a symlink loop (the link points back at itself); {give}") from None
        raise NotReadable(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise NotReadable(f"{path}: is a folder; {give}")
        problem = regular_file_problem(path, st)
        if problem is not None:
            raise NotReadable(f"{problem}; {give}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read((st.st_size if limit is None else limit) + 1)
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:
        raise NotReadable(f"{path}: larger than {limit // MiB} MiB, more than a {what} file holds")
    return data


class ChangedSincePinned(NotReadable):
    """A file whose bytes are no longer those its digest pinned a moment ago (something wrote it in between)."""

    fix = "compile again once nothing writes the input"

    @classmethod
    def at(cls, path: str | Path) -> ChangedSincePinned:
        return cls(f"{path} changed while ftc read it (the plan would pin one version and describe another)")


def read_pinned_text(path: str | Path, *, sha256: str | None, limit: int, what: str) -> str:
    """``read_bounded_text``, checked against ``sha256`` (hex, with or without "sha256:"; None: not pinned): what is
    read from a file is what its digest pins, not what a write after hashing made of it (``ChangedSincePinned``)."""
    text = read_bounded_text(path, limit=limit, what=what)
    if sha256 is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() != sha256.removeprefix("sha256:"):
        raise ChangedSincePinned.at(path)  # (strict UTF-8 decodes and encodes back to the same bytes)
    return text


class NotFinite(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in JSON: Python's parser takes them, JSON has no such numbers."""


def _refuse_constant(name: str) -> Any:
    raise NotFinite(f"{name} is not JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: a literal too large for a float
        raise NotFinite(f"{text[:40]} is too large a number (numbers must be finite)")
    return value


def finite_json(text: str | bytes, **options: Any) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers too large to be finite (:class:`NotFinite`, a
    ValueError)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, **options)
