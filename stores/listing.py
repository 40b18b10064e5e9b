"""A folder's files as ftc lists them: relative paths with forward slashes, dot-entries skipped, links followed,
a link loop refused, and every name one that can be shown and pinned."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NotAnInput", "name_problem", "walk_files"]


class NotAnInput(OSError):
    """A path that cannot be an input: not a regular file or folder (a FIFO or a device would block or never end),
    or a symlink loop. ``str()`` says which and where."""


# C0 and C1 controls, DEL, and the characters that hide or reorder text on a screen (ftc.spec.text escapes them all)
_UNSHOWABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)


def name_problem(name: str) -> str | None:
    """Why the relative path ``name`` (of a file in a folder input, a store listing or a DVC listing) cannot be
    pinned, or None: a control character (a newline, an escape), a character that hides or reorders text, or bytes
    that are not UTF-8."""
    from ftc.spec.text import for_terminal

    if re.search("[\ud800-\udfff]", name):  # bytes that are not UTF-8, kept by the file system's decoding
        shown = for_terminal(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        return f"the file name '{shown}' is not UTF-8: such a name cannot be written into a plan; rename the file"
    if not _UNSHOWABLE.search(name):
        return None

    return (
        f"the file name '{for_terminal(name)}' holds a control character (or one that hides text): such a name "
        "cannot be shown or pinned; rename the file"
    )


def walk_files(root: Path) -> Iterator[str]:
    """Relative paths (forward slashes) of the files under ``root``, skipping dot-entries; symlinks followed. A link
    to a folder that holds it (a loop), or a name :func:`name_problem` refuses, raises :class:`NotAnInput`."""
    chains: dict[str, tuple[tuple[int, int], ...]] = {}  # folder -> identities of it and the folders above it
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            raise NotAnInput(f"{dirpath} cannot be read ({exc.strerror or exc}; a symlink loop?)") from None
        above = chains.get(os.path.dirname(dirpath), ())
        if (st.st_dev, st.st_ino) in above:
            raise NotAnInput(f"{dirpath} links to a folder that holds it (a symlink loop)")
        chains[dirpath] = above + ((st.st_dev, st.st_ino),)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if not name.startswith("."):
                path = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                problem = name_problem(path)
                if problem is not None:
                    raise NotAnInput(f"{root}: {problem}")
                yield path
