"""Local files and folders, pinned by sha256 (via the stat cache)."""

from __future__ import annotations

import os
from pathlib import Path

from ftc.stores.hashing import hash_file, hash_tree, manifest_digest
from . import InputNotFound, ResolveContext, ResolvedInput


def resolve(location: str, ctx: ResolveContext) -> ResolvedInput:
    path = ctx.spec_path(location)
    if not path.exists():
        raise InputNotFound(f"no such file or folder: {path}", "check the path; relative paths are relative to the spec file")
    uri = ctx.plan_location(location)
    try:
        if path.is_dir():
            files = hash_tree(path, ctx.cache)
            if not files:
                raise InputNotFound(f"folder is empty: {path}", "point at the folder that holds the files")
            return ResolvedInput(
                source="local",
                uri=uri,
                pinned=True,
                kind="dir",
                digest=manifest_digest(files),
                size=sum(f.size for f in files),
                files=tuple(files),
                local_path=path,
            )
        sha256, size = hash_file(path, ctx.cache)
    except PermissionError as exc:
        raise InputNotFound(f"cannot read {exc.filename}: permission denied", "make it readable by this user") from None
    return ResolvedInput(source="local", uri=uri, pinned=True, kind="file", digest="sha256:" + sha256, size=size, local_path=path)
