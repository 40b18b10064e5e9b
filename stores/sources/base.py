"""What every input source kind is: the protocol (:class:`SourceKind`) and what resolving at compile time returns
(:class:`ResolvedInput`, :class:`ResolveContext`, :class:`InputNotFound`).

A kind answers, for its inputs, each question ftc asks of an input on its way: how a location is pinned when a spec
is compiled (``takes``, ``resolve``), where the input is when a plan runs (``find``, or ``objects`` and ``store``
for one fetched into the content cache), what a container or a cluster cannot reach, how a plan and a lineage
record describe it, and whether `ftc lineage verify` can fetch it again. Callers ask the kind
(``ftc.stores.sources.SOURCES[item.source]``); none of them branches on a kind's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftc.spec.model import Location
from ftc.spec.plan import Plan, PlanInput
from ftc.spec.text import redact
from ftc.stores.hashing import StatCache

__all__ = [
    "CLUSTER_REACHES",
    "InputNotFound",
    "ResolveContext",
    "ResolvedInput",
    "SourceKind",
    "refuse_credential",
]

#: what a cluster's pods reach (the fix for an input they do not)
CLUSTER_REACHES = (
    "a path inside the plan folder (copied to the claim in the same layout), or a remote input (s3://, gs://, dvc)"
)


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


class SourceKind:
    """One kind of input source, end to end. Each kind is a module of ``ftc.stores.sources`` with a subclass of
    this and a line in ``SOURCES``; what a kind does not override is what an input of no such ability gets."""

    #: the plan's and the lineage record's name of the kind (``PlanInput.source``)
    name: str = ""
    #: the input is a path on the machine that runs the plan (relative to the plan's folder unless absolute): found
    #: and hashed there, located again when a plan is placed elsewhere, named by location in lineage records
    on_disk: bool = False
    #: a run downloads its bytes into the content cache (``objects`` from ``store``), checking each
    fetched: bool = False
    #: an object store naming each object's identity (S3 ETag and version, GCS generation): a run checks each pin
    #: before reading, a lineage record keeps the pins, `ftc lineage verify` fetches the files again by them, and an
    #: ftc run may have published the folder as a checkpoint
    store_pins: bool = False
    #: the input is a published model named by its id (weights not pinned, read by id where the plan runs)
    names_a_model: bool = False

    # compile time: a spec's location pinned
    def takes(self, location: Location) -> bool:
        """Whether ``location`` (as a spec gives it) is one of this kind's."""
        return False

    def resolve(self, location: Location, ctx: ResolveContext) -> ResolvedInput:
        """Pin the input at ``location``; :class:`InputNotFound` with a fix when it cannot be."""
        raise InputNotFound(f"{self.name} inputs are not resolved from a location")

    # run time: where the input is
    def model_id(self, item: PlanInput) -> str | None:
        """The published model an input names instead of pinned bytes (read by its id, at run time), else None."""
        return None

    def find(self, role: str, item: PlanInput, plan: Plan, cache: StatCache, whole: bool = True) -> Path | str:
        """Where an input that is not fetched is on this machine, once checked against the plan's pins (with
        ``whole`` false, a folder's listed files only); a model id for one that ``model_id`` names."""
        model_id = self.model_id(item)
        if model_id is None:
            raise NotImplementedError(f"{self.name} inputs are fetched, not found")
        return model_id

    def objects(self, item: PlanInput) -> list[tuple[Any, dict[str, str], dict[str, str | None]]]:
        """A fetched input's objects: (``RemoteObject``, content cache key, the digests its bytes must have)."""
        raise NotImplementedError(f"{self.name} inputs are not fetched")

    def store(self, item: PlanInput) -> Any:
        """The store a fetched input's objects are read from (``RemoteProblem`` when it cannot be had)."""
        raise NotImplementedError(f"{self.name} inputs are not fetched")

    def endpoint(self, item: PlanInput) -> str | None:
        """The endpoint the input's pin names for its store (requests go there signed with this environment's
        credentials), if it names one."""
        return None

    # where a plan runs
    def container_problem(self, role: str, item: PlanInput) -> str | None:
        """Why a container run (offline, the host's paths mounted at the same paths) cannot read it, if it cannot."""
        return None

    def cluster_problem(self, role: str, item: PlanInput) -> str | None:
        """Why a cluster's pods (the plan folder on a claim, no hub) cannot read it, with a fix line, if they cannot."""
        return None

    # described
    def pin_text(self, item: PlanInput) -> str:
        """How `ftc plan show` names a pinned input's identity when the plan gives it no single digest."""
        return f"(pinned per object by the {self.name} store)"

    def namespace(self, source: dict[str, Any]) -> str:
        """The OpenLineage namespace of a lineage record's ``source`` of this kind."""
        return self.name
