"""``s3://bucket/key`` (an object) or ``s3://bucket/prefix/`` (a folder), pinned by ETag, size and version id.

Compiling reads what the checks need and no more: a data file is downloaded (into the content cache, so the run
does not fetch it again) and pinned by sha256 too; of a weights folder only the small JSON files are fetched.
"""

from __future__ import annotations

from ftc._canonical import digest_of
from ftc._content_cache import ContentCache
from ftc._s3 import S3Problem, client, list_objects, opener

from . import InputNotFound, ResolveContext, ResolvedInput

_SMALL = 1 << 20  # JSON members of a folder up to this size are fetched for the checks


def resolve(location: str, ctx: ResolveContext) -> ResolvedInput:
    cache = ContentCache()
    try:
        s3 = client()
        objects = list_objects(s3, location)
        if len(objects) == 1 and not location.endswith("/") and objects[0].key == location.split("/", 3)[-1]:
            (obj,) = objects
            path, sha = cache.fetch(obj.pin(), opener(s3, obj))
            return ResolvedInput(
                source="s3", uri=location, pinned=True, kind="file", digest="sha256:" + sha, size=obj.size,
                pin={"etag": obj.etag, "version_id": obj.version_id}, local_path=path,
            )
        small = {}
        for obj in objects:
            if obj.path.endswith(".json") and obj.size <= _SMALL:
                small[obj.path] = cache.fetch(obj.pin(), opener(s3, obj))[1]
    except S3Problem as exc:
        raise InputNotFound(str(exc), exc.hint) from None
    files = tuple({"path": o.path, "size": o.size, "etag": o.etag, "version_id": o.version_id} for o in objects)
    view = cache.view("partial-" + digest_of([location, files])[7:], small)
    return ResolvedInput(source="s3", uri=location, pinned=True, kind="dir", size=sum(o.size for o in objects), remote_files=files, local_path=view)
