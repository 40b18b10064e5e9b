"""What ftc verified and then reads, as it was when verified: to look at again once it is read.

Verifying a file (hashing it against the digest that pins it) and reading it (loading weights, tokenizing data) are
two opens: a write in between would be read unchecked. Each file hashed (or found in the stat cache) is stamped
*before* it is hashed: the file its path led to (links followed) and its device, inode, size, mtime and ctime; each
folder with its listing. Once everything is read, :meth:`ReadRecord.changed` names what is no longer so: a file
written (a write changes mtime and ctime, and only root can set a ctime back), replaced, removed, or given other
attributes, a link turned elsewhere, a file added to a folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .listing import NotAnInput, walk_files

__all__ = ["ReadRecord", "ReadStamp", "stamp", "stat_key"]

#: a file as it was when it was hashed: the file a path led to, and its stat key
ReadStamp = tuple[Path, tuple[int, int, int, int, int]]


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What of a file's stat changes when its bytes do: (device, inode, size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stamp(path: Path) -> ReadStamp:
    """The file ``path`` leads to (links followed) and its stat key now."""
    real = Path(os.path.realpath(path, strict=True))
    return real, stat_key(real.stat())


@dataclass
class ReadRecord:
    """Each file as it was when verified (path as it is opened -> stamp), and each folder's listing (folder ->
    the relative paths it held, as :func:`~ftc.stores.hashing.walk_files` gives them)."""

    files: dict[Path, ReadStamp] = field(default_factory=dict)
    folders: dict[Path, frozenset[str]] = field(default_factory=dict)

    def update(self, other: ReadRecord) -> None:
        self.files.update(other.files)
        self.folders.update(other.folders)

    def within(self, root: Path) -> ReadRecord:
        """What of this record is under ``root`` (or is it)."""

        def inside(path: Path) -> bool:
            return path == root or root in path.parents

        return ReadRecord(
            {p: s for p, s in self.files.items() if inside(p)}, {p: n for p, n in self.folders.items() if inside(p)}
        )

    def changed(self) -> list[Path]:
        """The files no longer as they were (or gone), then the files added to a folder since it was listed (a
        folder that can no longer be listed is named itself)."""
        changed = []
        for path, then in self.files.items():
            try:
                now = stamp(path)
            except OSError:
                now = None
            if now != then:
                changed.append(path)
        for folder, listed in self.folders.items():
            try:
                now = set(walk_files(folder))
            except (NotAnInput, OSError):
                changed.append(folder)
                continue
            changed += [folder / name for name in sorted(now - listed)]
        return changed
