"""Where a run is in its experiment tracker, kept in the output folder (``tracker.json``) from the run's start, so
``--resume`` continues that tracker run instead of starting another (``ftc.runtime.training.trackers``)."""

from __future__ import annotations

import re
from pathlib import Path

from ftc.errors import UsageError

from .progress import log

__all__ = ["TRACKER_FILE", "TRACKER_FILE_LIMIT", "interrupted_run"]

#: in the output folder: where this run is in its tracker (the link summary.json names at the end)
TRACKER_FILE = "tracker.json"
#: more than a tracker link ever holds
TRACKER_FILE_LIMIT = 64 << 10


def interrupted_run(out: Path, provider: str) -> str:
    """The run id ``out``/tracker.json names for ``provider`` ("" when there is none, or it is not one ftc wrote:
    the resumed run then starts a new tracker run)."""
    from ftc.spec.reading import finite_json, read_bounded_text

    path = out / TRACKER_FILE
    if not path.is_file():
        return ""
    try:
        link = finite_json(read_bounded_text(path, limit=TRACKER_FILE_LIMIT, what="tracker"))
    except (UsageError, ValueError):  # not readable as a small regular file, or not JSON
        link = None
    run_id = link.get("run_id") if isinstance(link, dict) and link.get("provider") == provider else None
    if not isinstance(run_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", run_id):
        if provider != "tensorboard":
            log(f"warning: {path} names no {provider} run ftc can continue; the resumed run starts a new one")
        return ""
    return run_id
