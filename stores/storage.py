"""When writing to disk fails: say whether the storage is read-only, full or not this user's (exit 15), so the
user fixes the disk rather than reading a traceback. Anything else is not a storage fault and is left as it is.

Two folders are written: a run's output folder and the cache (FTC_CACHE_DIR); each failure says which, and what
to do about that one.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Literal

from ftc.errors import StorageFailed

__all__ = ["storage_failure"]

#: free space under which a failed write is taken to be a full disk: torch's writer reports it in words that vary
#: ("file write failed", "iostream error", "unexpected pos"), never as ENOSPC
_NEARLY_FULL = 64 << 20

_FIXES = {
    "output": (
        "choose an output_dir on a writable disk",
        "make it writable, or choose another output_dir",
        "free space there, then continue with `ftc run PLAN --resume`",
        "\n    checkpoints written before are intact; a partial one is removed when the run starts again",
    ),
    "cache": (
        "set FTC_CACHE_DIR to a folder on a writable disk",
        "make it writable, or set FTC_CACHE_DIR to another folder",
        "free space there (or set FTC_CACHE_DIR to a larger disk), then run again",
        "\n    nothing half-downloaded was kept",
    ),
}


def storage_failure(
    folder: Path, exc: BaseException, doing: str, folder_is: Literal["output", "cache"] = "output"
) -> StorageFailed | None:
    """The :class:`StorageFailed` that ``exc``, raised while ``doing`` in ``folder`` (the run's output folder or the
    cache), amounts to; None when it is not a storage fault."""
    read_only, denied, full, after = _FIXES[folder_is]
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.EROFS or "Read-only file system" in text:
        why, fix = "is on a read-only file system", read_only
    elif code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        why, fix = "is not writable by this user", denied
    elif (
        code in (errno.ENOSPC, errno.EDQUOT)
        or "No space left" in text
        or (folder_is == "output" and _nearly_full(folder))
    ):
        why, fix = "is on a full disk (or over its quota)", full
    else:
        return None
    said = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    name = f"the cache {folder}" if folder_is == "cache" else str(folder)
    return StorageFailed(f"{name} {why}: {doing} failed ({said}){after}\n    fix: {fix}")


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False
