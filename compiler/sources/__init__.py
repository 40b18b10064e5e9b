"""Input sources: each kind of location (a local path, S3 or GCS, DVC) is one small module with ``resolve``.

``resolve_location`` picks the module by the location's scheme and returns a :class:`ResolvedInput`: where the
input is, its exact identity (digest, version) and, when this machine can read it, a local path for checks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ftc.spec.model import DvcLocation, Location
from ftc.spec.plan import PlanInput
from ftc.spec.text import redact
from ftc.stores.hashing import StatCache

__all__ = ["InputNotFound", "ResolveContext", "ResolvedInput", "hub_input", "refuse_credential", "resolve_location"]


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
    """One input: ``entry`` is what the plan says of it (where it is, its exact identity); ``local_path`` is where this
    machine can read it now, for the checks (for a remote folder: only the small JSON files the checks read)."""

    entry: PlanInput
    local_path: Path | None = field(default=None, compare=False)

    @property
    def source(self) -> str:
        return self.entry.source

    @property
    def kind(self) -> str | None:
        return self.entry.kind

    @property
    def names(self) -> list[str]:
        """Relative paths of a folder's files."""
        return [f.path for f in self.entry.files or ()]

    def with_records(self, records: int, bad_records: int = 0) -> ResolvedInput:
        return replace(self, entry=replace(self.entry, records=records, bad_records=bad_records or None))


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

        return local.resolve(location[len("file://") :] if match else location, ctx)
    if scheme in ("s3", "gs"):
        from . import bucket

        refuse_credential(location, "the URI")

        return bucket.resolve(location, ctx)
    raise InputNotFound(
        f"{scheme}:// inputs are not supported by this version of ftc",
        "copy the input to a local path and point the spec at it",
    )


def refuse_credential(location: str, what: str, hint: str = "") -> None:
    """Raise :class:`InputNotFound` (a spec problem) when ``location`` holds a credential (user-info of any shape,
    a secret query parameter): it would be written into the plan, every checkpoint's record and their uploads. The
    message shows ``location`` redacted."""
    if redact(location) != location:
        raise InputNotFound(
            f"{redact(location)}: {what} holds a credential (user:secret@ or a secret parameter), which would be "
            "written into the plan and every checkpoint's record",
            hint or "remove it; store credentials come from the environment (AWS_*, GOOGLE_*) at run time",
            "spec",
        )


def hub_input(model_id: str) -> ResolvedInput:
    """The published weights of ``model_id``: named, not pinned (no revision is known at compile time)."""
    return ResolvedInput(PlanInput(source="hub", uri=f"hf://{model_id}", pinned=False))
