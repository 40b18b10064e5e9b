"""Objects in a store (``s3://bucket/key``, ``gs://bucket/name``; a trailing / makes it a folder), pinned by the
store's own identity of each object (S3: ETag and version id; GCS: generation and hashes).

Compiling reads what the checks need and no more: a data file is downloaded (into the content cache, so the run
does not fetch it again) and pinned by sha256 too; of a weights folder only the small JSON files are fetched.
"""

from __future__ import annotations

from ftc.spec.canonical import digest_of
from ftc.spec.plan import PlanFile, PlanInput
from ftc.stores.content_cache import ContentCache, DigestMismatch
from ftc.stores.hashing import name_problem
from ftc.stores.remote import RemoteProblem, store_for

from . import InputNotFound, ResolveContext, ResolvedInput

_SMALL = 1 << 20  # JSON members of a folder up to this size are fetched for the checks


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
