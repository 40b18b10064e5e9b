"""Input sources: each kind of location (a local path, S3 or GCS, DVC) is one small module with ``resolve``.

``resolve_location`` picks the module by the location's scheme and returns a :class:`ResolvedInput`: where the
input is, its exact identity (digest, version) and, when this machine can read it, a local path for checks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftc.stores.hashing import FileDigest, StatCache
from ftc.spec.model import DvcLocation, Location

__all__ = ["InputNotFound", "ResolveContext", "ResolvedInput", "resolve_location", "hub_input"]


class InputNotFound(Exception):
    """An input that cannot be had; ``hint`` says what to do, ``reason`` why: "input" (not found), "denied",
    "unreachable", "unconfigured" (ftc.errors.INPUT_EXIT_CODES), or "spec" for a location written wrong."""

    def __init__(self, message: str, hint: str = "", reason: str = "input"):
        super().__init__(message)
        self.hint, self.reason = hint, reason


@dataclass(frozen=True)
class ResolveContext:
    base_dir: Path  # relative spec paths are relative to this (the spec's folder)
    plan_dir: Path  # relative plan paths are relative to this (the plan's folder)
    cache: StatCache | None = None

    def spec_path(self, location: str) -> Path:
        """A path as the spec wrote it, on this machine: relative to the spec's folder unless absolute or ``~``."""
        given = Path(os.path.expanduser(location))
        return given if given.is_absolute() else self.base_dir / given

    def plan_location(self, location: str, path: Path | None = None) -> str:
        """How the plan names a path the spec wrote: relative to the plan's folder, so neither depends on this
        machine's absolute paths (an absolute or ``~`` path the user wrote stays as written). ``path``: where it
        is found, when that differs from the spec's location (a repository's top folder)."""
        if location.startswith("~") or Path(location).is_absolute():
            return location
        found = path if path is not None else self.spec_path(location)
        return Path(os.path.relpath(found.resolve(), self.plan_dir.resolve())).as_posix()


@dataclass(frozen=True)
class ResolvedInput:
    """One input, pinned. Everything but ``local_path`` goes into the plan."""

    source: str
    uri: str
    pinned: bool
    kind: str | None = None
    digest: str | None = None
    size: int | None = None
    files: tuple[FileDigest, ...] | None = None
    pin: dict[str, Any] | None = None
    records: int | None = None
    bad_records: int | None = None
    #: the objects of a remote folder: path, size and the store's pin of each (etag, version, generation), no sha256
    remote_files: tuple[dict[str, Any], ...] | None = None
    #: where this machine can read the input now (for a remote folder: only the small JSON files the checks read)
    local_path: Path | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        """Relative paths of a folder's files."""
        if self.files is not None:
            return [f.path for f in self.files]
        return [f["path"] for f in self.remote_files or ()]

    def with_records(self, records: int, bad_records: int = 0) -> "ResolvedInput":
        return replace(self, records=records, bad_records=bad_records or None)

    def to_plan(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "uri": self.uri, "pinned": self.pinned}
        for key in ("kind", "digest", "size", "pin", "records", "bad_records"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.files is not None:
            out["files"] = [f.to_dict() for f in self.files]
        if self.remote_files is not None:
            out["files"] = [dict(f) for f in self.remote_files]
        return out


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def resolve_location(location: Location, ctx: ResolveContext) -> ResolvedInput:
    """Pin the input at ``location``. Raises :class:`InputNotFound` with a fix when it cannot."""
    if isinstance(location, DvcLocation):
        from . import dvc

        return dvc.resolve(location.dvc, ctx)
    match = _SCHEME.match(location)
    scheme = match.group(1).lower() if match else "file"
    if scheme == "file":
        from . import local

        return local.resolve(location[len("file://"):] if match else location, ctx)
    if scheme in ("s3", "gs"):
        from . import remote

        return remote.resolve(location, ctx)
    raise InputNotFound(
        f"{scheme}:// inputs are not supported by this version of ftc",
        "copy the input to a local path and point the spec at it",
    )


def hub_input(model_id: str) -> ResolvedInput:
    """The published weights of ``model_id``: named, not pinned (no revision is known at compile time)."""
    return ResolvedInput(source="hub", uri=f"hf://{model_id}", pinned=False)
