"""Writing files only where they are meant to go.

- :func:`write_text_atomic`: a file that readers see old or new, never part of it (a temp file, then a rename);
  it never replaces a link, a device, a FIFO, a socket or a folder that is at the target (a rename over
  ``/dev/stdout`` would replace the machine's ``/dev/stdout`` with a regular file).
- :func:`check_output_path`: the same refusals for a command's ``-o``, made before any work (a merge or an eval can
  take minutes), plus an output inside the checkpoint the command reads.
- :func:`open_regular`: ``os.open`` for files ftc creates or appends to in a folder others may write to (an output
  folder, the cache): a planted symbolic link there is refused, never followed (``O_NOFOLLOW``), and so is
  anything that is not a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ftc.errors import FtcError, StorageFailed, UsageError

__all__ = ["check_output_path", "clear_planted", "open_regular", "write_text_atomic"]

_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _link_text(path: Path) -> str:
    """Where the link at ``path`` points, as a terminal shows it safely (whoever planted it chose the text)."""
    from ftc.spec.text import for_terminal

    try:
        return f" (to {for_terminal(os.readlink(path))})"
    except OSError:
        return ""


def check_output_path(
    path: str | Path,
    *,
    folder: bool = False,
    not_inside: Iterable[str | Path] = (),
    option: str = "-o",
    error: type[FtcError] = UsageError,
) -> Path:
    """Refuse an output ``path`` that ftc must not write, before any work is done; return it.

    Refused: a symbolic link there (to anything, or dangling: ftc neither writes through a link nor replaces it);
    anything there that is not a regular file (``folder``: not a folder); a path under something that is not a
    folder; a path that is, or is inside, one of ``not_inside`` (the checkpoint or data the command reads), however
    it is spelled (``..``, a symlinked folder above it, a trailing slash). ``option`` names the path in messages
    (``-o``); ``error``: the :class:`FtcError` raised."""
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    want = "a folder" if folder else "a regular file"
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        found = None
    except NotADirectoryError:
        found = None  # a file above it: said below
    except OSError as exc:
        raise error(f"{named}: cannot be looked at ({exc.strerror})\n    fix: give another path") from None
    if found is not None and stat.S_ISLNK(found.st_mode):
        raise error(
            f"{named} is a symbolic link{_link_text(path)}; ftc neither writes through a link nor replaces one"
            "\n    fix: give the real path (or remove the link)"
        )
    if found is not None and not (stat.S_ISDIR(found.st_mode) if folder else stat.S_ISREG(found.st_mode)):
        raise error(
            f"{named} is {_kind(found.st_mode)}, not {want}; ftc does not replace it"
            f"\n    fix: give the path of {'a new folder' if folder else 'a file to write'}"
        )
    above = Path(os.path.abspath(path)).parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():  # (follows a link: a link to a folder above the output is the user's own layout)
        raise error(f"{named}: {above} is not a folder\n    fix: give a path under a folder")
    real = Path(os.path.realpath(path))
    for source in not_inside:
        inside = Path(os.path.realpath(source))
        if real == inside or inside in real.parents:
            where, fix = ("", "elsewhere") if real == inside else ("inside ", "outside that folder")
            raise error(
                f"{named} is {where}{source}, which this command reads: writing there would change it (a checkpoint"
                f" would no longer verify)\n    fix: write it {fix}"
            )
    return path


def write_text_atomic(path: str | Path, text: str, *, error: type[FtcError] = UsageError) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder, then rename it into place. A link or
    anything but a regular file at ``path`` is refused (``error``), never replaced."""
    import tempfile  # 4 ms of imports, only when writing

    path = Path(path)
    check_output_path(path, option="", error=error)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # O_EXCL: a new file
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # an ordinary file, not mkstemp's private 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # (a rename replaces a name: it never writes through what was there)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_regular(
    path: str | Path,
    flags: int,
    mode: int = 0o644,
    *,
    fix: str = "remove it (and find out how it got there), or choose another output_dir",
    error: type[FtcError] = StorageFailed,
) -> int:
    """``os.open(path, flags, mode)`` for a file ftc creates, appends to or reads in a folder others may write to:
    a symbolic link at ``path`` is refused, not followed (``O_NOFOLLOW``), and so is anything but a regular file (a
    FIFO is never waited on, a device never truncated), and, to be written, a file with another name (a hard link
    planted there would carry the write to the file it shares). Raises ``error`` with ``fix``; other OSErrors as
    they are."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENODEV):
            raise
        try:
            kind = _kind(os.lstat(path).st_mode)
        except OSError:
            kind = "not a regular file"
        link = _link_text(path) if exc.errno == errno.ELOOP else ""
        raise error(
            f"{path} is {kind}{link}, not a file ftc wrote; refused: ftc never writes through a link or into "
            f"anything but a regular file there\n    fix: {fix}"
        ) from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise error(
                f"{path} is {_kind(found.st_mode)}, not a file ftc wrote; refused: ftc writes only regular files "
                f"there\n    fix: {fix}"
            )
        if flags & (os.O_WRONLY | os.O_RDWR) and found.st_nlink > 1:
            raise error(
                f"{path} has {found.st_nlink - 1} other name(s) (a hard link), so it is not a file ftc wrote; refused:"
                f" writing it would change the other file too\n    fix: {fix}"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def clear_planted(path: str | Path) -> None:
    """Remove a symbolic link or a file at ``path`` (where ftc is about to make a folder of its own, e.g. a
    temporary one): the link itself goes, never what it points to. A folder there is left to its caller."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
