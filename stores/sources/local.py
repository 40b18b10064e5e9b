"""Local files and folders: pinned by sha256 (via the stat cache) at compile time, found and hashed again where the
plan runs (relative paths are relative to the plan's folder), mounted at the same path in a container."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from ftc.errors import InputChanged, PlanInvalid
from ftc.spec.model import Location
from ftc.spec.plan import Plan, PlanFile, PlanInput
from ftc.stores.hashing import (
    MANIFEST_FORMAT,
    NotAnInput,
    StatCache,
    changed_file_lines,
    hash_file,
    hash_tree,
    legacy_manifest_digest,
    manifest_digest,
    walk_files,
)
from ftc.stores.weights_folder import WEIGHT_SUFFIXES

from .base import CLUSTER_REACHES, InputNotFound, ResolveContext, ResolvedInput, SourceKind

__all__ = ["HOME_IN_CONTAINER", "Local", "is_absolute", "is_outside"]

#: why a `~` path is refused for a container run
HOME_IN_CONTAINER = (
    "`~` would mean another folder inside the container; "
    "write the path out (or make it relative to the spec) and recompile"
)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_absolute(uri: str) -> bool:
    """A plan's path that does not follow the plan's folder (absolute, ``~``, or another scheme's)."""
    return uri.startswith(("/", "~")) or "://" in uri


def is_outside(uri: str) -> bool:
    """A plan's relative path that leads out of the plan's folder."""
    path = posixpath.normpath(uri)
    return path == ".." or path.startswith("../")


class Local(SourceKind):
    name = "local"
    on_disk = True

    def takes(self, location: Location) -> bool:
        if not isinstance(location, str):
            return False
        match = _SCHEME.match(location)
        return match is None or match.group(1).lower() == "file"

    def resolve(self, location: Location, ctx: ResolveContext) -> ResolvedInput:
        location = location[len("file://") :] if _SCHEME.match(location) else location
        path = ctx.spec_path(location)
        try:
            path.stat()
        except FileNotFoundError:
            raise InputNotFound(
                f"no such file or folder: {path}", "check the path; relative paths are relative to the spec file"
            ) from None
        except OSError as exc:  # a symlink loop, a path through a file
            raise InputNotFound(
                f"{path}: {exc.strerror or exc}", "point the spec at a regular file or folder"
            ) from None
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
            raise InputNotFound(
                f"cannot read {exc.filename}: permission denied", "make it readable by this user"
            ) from None
        except NotAnInput as exc:
            raise InputNotFound(str(exc), "an input is a regular file, or a folder of them") from None
        entry = PlanInput("local", uri, pinned=True, kind="file", digest="sha256:" + sha256, size=size)
        return ResolvedInput(entry, local_path=path)

    def find(self, role: str, item: PlanInput, plan: Plan, cache: StatCache, whole: bool = True) -> Path:
        return _verify_local(role, item, plan.locate(item.uri), cache, whole=whole)

    def container_problem(self, role: str, item: PlanInput) -> str | None:
        return f"{role}: {item.uri}: {HOME_IN_CONTAINER}" if item.uri.startswith("~") else None

    def cluster_problem(self, role: str, item: PlanInput) -> str | None:
        if is_absolute(item.uri):
            return (
                f"{role}: {item.uri} is an absolute path, which the cluster cannot reach"
                f"\n    fix: use {CLUSTER_REACHES}"
            )
        if is_outside(item.uri):
            return (
                f"{role}: {item.uri} is outside the plan folder, which is all the cluster sees"
                f"\n    fix: use {CLUSTER_REACHES}"
            )
        return None

    def namespace(self, source: dict) -> str:
        return "file"


def _verify_local(role: str, item: PlanInput, path: Path, cache: StatCache, whole: bool = True) -> Path:
    """``path``, after checking it holds the bytes ``item`` pins (with ``whole`` false, a folder's files but its
    weights, which it must hold by name)."""
    if not path.exists():
        raise InputChanged(
            f"{role}: {path} is gone (the plan pins {item.digest})\n    fix: restore it, or recompile the spec"
        )
    try:
        if not whole and item.kind == "dir":
            return _check_listed(role, item, path, cache)
        return _check_local(role, item, path, cache)
    except NotAnInput as exc:
        raise InputChanged(
            f"{role}: {exc} (the plan pins {item.digest})\n    fix: restore it, or recompile the spec"
        ) from None


def _check_listed(role: str, item: PlanInput, path: Path, cache: StatCache) -> Path:
    listed = frozenset(f.path for f in item.files)
    found = frozenset(walk_files(path))
    if found != listed:
        changes = [f"    {name}: not in the plan" for name in sorted(found - listed)]
        changes += [f"    {name}: missing" for name in sorted(listed - found)]
        raise InputChanged(
            f"{role}: {path} changed since the plan was compiled\n" + "\n".join(changes)
            + "\n    fix: restore the pinned files, or recompile the spec to train on the new ones"
        )  # fmt: skip
    cache.read.folders[path] = listed
    for f in item.files:
        if f.path.endswith(WEIGHT_SUFFIXES):
            continue  # (by name only: what reading a tokenizer needs, for any model size)
        try:
            sha, _ = hash_file(path / f.path, cache)
        except FileNotFoundError:
            sha = "(missing)"
        if sha != f.sha256:
            raise InputChanged(
                f"{role}: {path / f.path} changed since the plan was compiled"
                f"\n    expected sha256:{f.sha256}\n    found    sha256:{sha}"
                "\n    fix: restore the pinned file, or recompile the spec to train on the new one"
            )
    return path


def _check_local(role: str, item: PlanInput, path: Path, cache: StatCache) -> Path:
    if item.kind == "dir":
        files = hash_tree(path, cache)
        digest = manifest_digest(files)
        if digest != item.digest and legacy_manifest_digest(files) == item.digest:
            raise PlanInvalid(
                f"{role}: the plan pins {path} by a folder manifest of an older ftc (format 1, in which a file's name "
                f"could forge another file's entry); this ftc pins folders by {MANIFEST_FORMAT}"
                "\n    fix: recompile the spec with this ftc (the folder itself is unchanged)"
            )
        if digest != item.digest:
            changes = changed_file_lines(
                item.file_sha256, {f.path: f.sha256 for f in files}, prefix="    ", unlisted="not in the plan"
            )
            raise InputChanged(
                f"{role}: {path} changed since the plan was compiled\n"
                + "\n".join(changes)
                + f"\n    expected {item.digest}\n    found    {digest}"
                + "\n    fix: restore the pinned files, or recompile the spec to train on the new ones"
            )
    else:
        sha, _ = hash_file(path, cache)
        if "sha256:" + sha != item.digest:
            raise InputChanged(
                f"{role}: {path} changed since the plan was compiled"
                f"\n    expected {item.digest}\n    found    sha256:{sha}"
                "\n    fix: restore the pinned file, or recompile the spec to train on the new one"
            )
    return path
