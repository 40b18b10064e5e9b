"""Objects in a store (``s3://bucket/key``, ``gs://bucket/name``; a trailing / makes it a folder), pinned by the
store's own identity of each object (S3: ETag and version id; GCS: generation and hashes).

Compiling reads what the checks need and no more: a data file is downloaded (into the content cache, so the run
does not fetch it again) and pinned by sha256 too; of a weights folder only the small JSON files are fetched.
"""

from __future__ import annotations

import re
from typing import Any

from ftc.spec.canonical import digest_of
from ftc.spec.model import Location
from ftc.spec.plan import PlanFile, PlanInput
from ftc.stores.content_cache import ContentCache, DigestMismatch
from ftc.stores.hashing import name_problem
from ftc.stores.remote import RemoteObject, RemoteProblem, Store, store_for

from .base import InputNotFound, ResolveContext, ResolvedInput, SourceKind, refuse_credential

__all__ = ["Bucket"]

_SMALL = 1 << 20  # JSON members of a folder up to this size are fetched for the checks
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class Bucket(SourceKind):
    """S3 (``name`` s3, scheme s3://) or GCS (``name`` gcs, scheme gs://)."""

    fetched = True
    store_pins = True

    def __init__(self, name: str, scheme: str):
        self.name, self.scheme = name, scheme

    def takes(self, location: Location) -> bool:
        match = _SCHEME.match(location) if isinstance(location, str) else None
        return match is not None and match.group(1).lower() == self.scheme

    def resolve(self, location: Location, ctx: ResolveContext) -> ResolvedInput:
        refuse_credential(location, "the URI")
        return resolve(location, ctx)

    def objects(self, item: PlanInput) -> list[tuple[Any, dict[str, str], dict[str, str | None]]]:
        uri = item.uri
        if item.kind == "file":
            obj = RemoteObject(uri, uri.rsplit("/", 1)[-1], item.size, dict(item.pin or {}))
            return [(obj, obj.cache_key(), {"sha256": item.digest[7:], "md5": obj.md5_hex()})]
        prefix = uri if uri.endswith("/") else uri + "/"
        objects = []
        for f in item.files:
            obj = RemoteObject(prefix + f.path, f.path, f.size, dict(f.pin or {}))
            objects.append((obj, obj.cache_key(), {"sha256": f.sha256, "md5": obj.md5_hex()}))
        return objects

    def store(self, item: PlanInput) -> Store:
        return store_for(item.uri)

    def namespace(self, source: dict[str, Any]) -> str:
        uri = source.get("uri", "")
        if "://" in uri:
            return uri.split("/", 3)[0] + "//" + uri.split("/", 3)[2]  # s3://bucket
        return self.name


def resolve(location: str, ctx: ResolveContext) -> ResolvedInput:
    source = "s3" if location.startswith("s3://") else "gcs"
    cache = ContentCache()
    try:
        store = store_for(location)
        objects = store.list(location)
        if len(objects) == 1 and objects[0].uri == location:
            (obj,) = objects
            path, sha = cache.fetch(obj.cache_key(), store.opener(obj), size=obj.size, expected_md5=obj.md5_hex())
            digest = "sha256:" + sha
            entry = PlanInput(source, location, pinned=True, kind="file", digest=digest, size=obj.size, pin=obj.pin)
            return ResolvedInput(entry, local_path=path)
        for obj in objects:
            problem = name_problem(obj.path)
            if problem is not None:
                raise InputNotFound(f"{location}: {problem}", "rename the object in the store")
        small = {}
        for obj in objects:
            if obj.path.endswith(".json") and obj.size <= _SMALL:
                small[obj.path] = cache.fetch(
                    obj.cache_key(), store.opener(obj), size=obj.size, expected_md5=obj.md5_hex()
                )[1]
    except RemoteProblem as exc:
        raise InputNotFound(str(exc), exc.hint, exc.reason) from None
    except DigestMismatch as exc:  # the bytes that arrived are not the ones the store describes
        raise InputNotFound(
            f"{location}: the download does not match the store's own digest of it ({exc})",
            "try again; if it persists, the store's copy is damaged",
            "unreachable",
        ) from None
    files = tuple(PlanFile(o.path, o.size, pin=o.pin) for o in objects)
    view = cache.view("partial-" + digest_of([location, [f.to_dict() for f in files]])[7:], small)
    entry = PlanInput(source, location, pinned=True, kind="dir", size=sum(o.size for o in objects), files=files)
    return ResolvedInput(entry, local_path=view)
