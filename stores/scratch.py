"""Scratch folders a process keeps for itself in the system's temp folder, and what a killed process left there.

A scratch folder (the compiled layers' code, a Ray run's folder, a run's outcome note) is private (mode 0700) and
removed by the process that made it when it is done. A process killed outright (SIGKILL, the kernel's out-of-memory
killer) cannot remove it, so every new scratch folder first removes those of killed processes: each is named
``ftc-<kind>-<where>-<pid>-<random>``, ``<where>`` the host and its process-id namespace, and one of this user, made
where this process runs by a process that no longer runs, is left over. A folder of a running process, of another
host or another process-id namespace sharing the temp folder (a container's, with its own process ids, even one that
shares the host's name; or a folder the container runtime mounted there from outside), or of another user is never
touched, nor anything that is not a folder (a link is not followed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["left_over", "scratch", "scratch_folder"]


def scratch_folder(kind: str, *, root: str | Path | None = None) -> Path:
    """A new private folder for this process's ``kind`` of scratch in ``root`` (default: the system's temp folder),
    once the scratch folders killed processes left there are removed. The caller removes it."""
    root = Path(root or tempfile.gettempdir())
    for folder in left_over(root):
        shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"ftc-{kind}-{_where()}-{os.getpid()}-", dir=root))


@contextmanager
def scratch(kind: str, *, root: str | Path | None = None) -> Iterator[Path]:
    """``scratch_folder``, removed when the block ends (whatever is left in it)."""
    folder = scratch_folder(kind, root=root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def left_over(root: Path) -> list[Path]:
    """The scratch folders in ``root`` that processes of this host, now gone, made and could not remove."""
    pattern = re.compile(rf"ftc-[a-z]+-{re.escape(_where())}-(\d+)-[^/]+")
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _running(int(match.group(1))):
            continue
        try:
            st = os.lstat(root / name)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            found.append(root / name)
    return found


def _where() -> str:
    """This host's name and its process-id namespace (where a process id means this process), as a folder name may
    hold them."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
    try:
        return f"{host}.{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (not Linux): the host alone
        return host


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host now (any user's: a process of another user counts as running)."""
    if pid <= 0:
        return True  # not a process id ftc named a folder by: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
