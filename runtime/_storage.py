"""When writing the output fails: say whether the storage is read-only, full or not this user's (exit 15), so the
user fixes the disk rather than reading a traceback. Anything else is not a storage fault and is left as it is."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from ftc.errors import StorageFailed

__all__ = ["storage_failure"]

#: free space under which a failed write is taken to be a full disk: torch's writer reports it in words that vary
#: ("file write failed", "iostream error", "unexpected pos"), never as ENOSPC
_NEARLY_FULL = 64 << 20


def storage_failure(folder: Path, exc: BaseException, doing: str) -> StorageFailed | None:
    """The :class:`StorageFailed` that ``exc``, raised while ``doing`` in ``folder``, amounts to; None when it is not
    a storage fault."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.EROFS or "Read-only file system" in text:
        why, fix = "is on a read-only file system", "choose an output_dir on a writable disk"
    elif code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        why, fix = "is not writable by this user", "make it writable, or choose another output_dir"
    elif code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or _nearly_full(folder):
        why, fix = (
            "is on a full disk (or over its quota)",
            "free space there, then continue with `ftc run PLAN --resume`",
        )
    else:
        return None
    return StorageFailed(
        f"{folder} {why}: {doing} failed ({text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__})"
        f"\n    checkpoints written before are intact; a partial one is removed when the run starts again"
        f"\n    fix: {fix}"
    )


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False
