"""Where ftc keeps its state on this machine: the cache folder (downloads, hashes, validated specs) and, under it,
the staging folders of runs whose output_dir is an object-store prefix."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "staging_dir"]


def cache_dir() -> Path:
    """ftc's cache folder: $FTC_CACHE_DIR, else $XDG_CACHE_HOME/ftc, else ~/.cache/ftc."""
    if os.environ.get("FTC_CACHE_DIR"):
        return Path(os.environ["FTC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ftc"


def staging_dir(plan_id: str) -> Path:
    """The local folder a run of plan ``plan_id`` writes into before its checkpoints are uploaded."""
    return cache_dir() / "staging" / plan_id.removeprefix("sha256:")[:16]
