"""Input sources: one module per kind of input (a local path, a model hub, S3 or GCS, DVC), each a
:class:`SourceKind` that carries the kind end to end: pinned at compile time, found or fetched into the content cache
at run time, refused where a container or a cluster cannot read it, described in plans and lineage records, fetched
again by `ftc lineage verify`. ``SOURCES`` is the one list of kinds; adding a kind is a module and a line there (and
the kind's name in the plan and lineage schemas' ``source`` enums, the contract).

``resolve_location`` picks the kind that takes a spec's location and returns a :class:`ResolvedInput`: where the
input is, its exact identity (digest, version) and, when this machine can read it, a local path for checks.
"""

from __future__ import annotations

import re

from ftc.spec.model import Location

from .base import CLUSTER_REACHES, InputNotFound, ResolveContext, ResolvedInput, SourceKind, refuse_credential
from .bucket import Bucket
from .dvc import Dvc
from .hub import Hub, hub_input
from .local import Local

__all__ = [
    "CLUSTER_REACHES",
    "SOURCES",
    "InputNotFound",
    "ResolveContext",
    "ResolvedInput",
    "SourceKind",
    "hub_input",
    "kind_named",
    "refuse_credential",
    "resolve_location",
]

#: every kind of input source, by the name plans and lineage records give it (``PlanInput.source``)
SOURCES: dict[str, SourceKind] = {
    "local": Local(),
    "hub": Hub(),
    "s3": Bucket("s3", "s3"),
    "gcs": Bucket("gcs", "gs"),
    "dvc": Dvc(),
}

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def kind_named(name: object) -> SourceKind | None:
    """The kind a plan or a lineage record names (``None`` for a name that is no kind's, or no name at all: a
    record read back is outside input)."""
    return SOURCES.get(name) if isinstance(name, str) else None


def resolve_location(location: Location, ctx: ResolveContext) -> ResolvedInput:
    """Pin the input at ``location``. Raises :class:`InputNotFound` with a fix when it cannot."""
    for kind in SOURCES.values():
        if kind.takes(location):
            return kind.resolve(location, ctx)
    match = _SCHEME.match(location)
    scheme = match.group(1).lower() if match else "file"
    raise InputNotFound(
        f"{scheme}:// inputs are not supported by this version of ftc",
        "copy the input to a local path and point the spec at it",
    )
