"""Folders no run writes into: the root, the home folder and the system's own folders.

An ``output_dir`` (compiled or carried in a checkpoint's plan) and a container's read-write bind are checked
against the same list, so a spec, a plan or a checkpoint cannot point a run's writes at ``/etc`` or ``~``.

- The folder and everything under it (the system's files, devices and kernel views): ``/etc``, ``/usr``, ``/bin``,
  ``/sbin``, ``/lib``, ``/lib32``, ``/lib64``, ``/libx32``, ``/boot``, ``/dev``, ``/proc``, ``/sys``, ``/run`` and
  ``/var``'s system parts (``lib``, ``log``, ``spool``, ``cache``, ``mail``, ``backups``).
- The folder itself only (a run's own folder below it is fine): ``/``, the user's home, ``/home``, ``/root``,
  ``/var``, ``/opt``, ``/srv``, ``/mnt``, ``/media``, ``/tmp``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SYSTEM_TREES", "TOP_FOLDERS", "system_folder"]

SYSTEM_TREES = (
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc", "/sys", "/run",
    "/var/lib", "/var/log", "/var/spool", "/var/cache", "/var/mail", "/var/backups",
)  # fmt: skip
TOP_FOLDERS = ("/", "/home", "/root", "/var", "/opt", "/srv", "/mnt", "/media", "/tmp")


def system_folder(path: str | Path) -> str | None:
    """Why a run may not write into ``path`` (an absolute path, ``~`` expanded by the caller), or None. Checked as
    written and with its symlinks resolved (``/lib`` may be a link to ``/usr/lib``, a harmless-looking folder a link
    to ``/etc``)."""
    written = os.path.normpath(str(path))
    try:
        resolved = os.path.realpath(written)
    except (OSError, ValueError):
        resolved = written
    home = os.path.normpath(os.path.expanduser("~"))
    for candidate in dict.fromkeys((written, resolved)):
        if candidate == home:
            return f"{candidate} is the home folder"
        if candidate in TOP_FOLDERS:
            return f"{candidate} is {'the root folder' if candidate == '/' else 'a system folder'}"
        for tree in SYSTEM_TREES:
            if candidate == tree or candidate.startswith(tree + "/"):
                return f"{candidate} is {'a system folder' if candidate == tree else f'inside {tree}'}"
    return None
