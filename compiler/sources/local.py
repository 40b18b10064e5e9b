"""Local files and folders, pinned by sha256 (via the stat cache)."""

from __future__ import annotations

from ftc.spec.plan import PlanFile, PlanInput
from ftc.stores.hashing import NotAnInput, hash_file, hash_tree, manifest_digest

from . import InputNotFound, ResolveContext, ResolvedInput


def resolve(location: str, ctx: ResolveContext) -> ResolvedInput:
    path = ctx.spec_path(location)
    try:
        path.stat()
    except FileNotFoundError:
        raise InputNotFound(
            f"no such file or folder: {path}", "check the path; relative paths are relative to the spec file"
        ) from None
    except OSError as exc:  # a symlink loop, a path through a file
        raise InputNotFound(f"{path}: {exc.strerror or exc}", "point the spec at a regular file or folder") from None
    uri = ctx.plan_location(location)
    try:
        if path.is_dir():
            files = hash_tree(path, ctx.cache)
            if not files:
                raise InputNotFound(f"folder is empty: {path}", "point at the folder that holds the files")
            listed = tuple(PlanFile(f.path, f.size, sha256=f.sha256) for f in files)
            size = sum(f.size for f in files)
            entry = PlanInput(
                "local", uri, pinned=True, kind="dir", digest=manifest_digest(files), size=size, files=listed
            )
            return ResolvedInput(entry, local_path=path)
        sha256, size = hash_file(path, ctx.cache)
    except PermissionError as exc:
        raise InputNotFound(f"cannot read {exc.filename}: permission denied", "make it readable by this user") from None
    except NotAnInput as exc:
        raise InputNotFound(str(exc), "an input is a regular file, or a folder of them") from None
    entry = PlanInput("local", uri, pinned=True, kind="file", digest="sha256:" + sha256, size=size)
    return ResolvedInput(entry, local_path=path)
