"""Before any training: find every input the plan pins and check it is still the same bytes."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path

from ftc.errors import InputChanged, InputUnresolvable, PlanInvalid
from ftc.spec.plan import Plan, PlanInput
from ftc.stores.hashing import (
    MANIFEST_FORMAT,
    NotAnInput,
    StatCache,
    changed_file_lines,
    hash_file,
    hash_tree,
    legacy_manifest_digest,
    manifest_digest,
)

from .progress import byte_progress, log

__all__ = ["CHECKED_BY_HOST_ENV", "materialize_remote", "verify_inputs"]

#: set to the plan_id by `ftc run --backend docker` for the container: the host has checked every remote input
#: against its store and put it in the (shared) cache, so the container reads the cache and needs no credentials
CHECKED_BY_HOST_ENV = "FTC_REMOTE_INPUTS_CHECKED"


#: files of a weights folder that hold weights (not needed to read its tokenizer or config)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")


def verify_inputs(plan: Plan, roles: set[str] | None = None, weights: bool = True) -> dict[str, Path | str]:
    """Where each input (of ``roles``; default: all) is on this machine (a model id for unpinned hub weights).
    Raises :class:`InputChanged` naming the input, the expected and the found digest when anything differs from the
    plan. Without ``weights``, a folder's weight files are neither fetched nor checked (its other files are): what
    reading a tokenizer needs, for any model size."""
    found: dict[str, Path | str] = {}
    # in a container `ftc run --backend docker` started after checking every remote input against its store
    checked_by_host = os.environ.get(CHECKED_BY_HOST_ENV) == plan.plan_id
    inputs = {role: item for role, item in plan.inputs.items() if roles is None or role in roles}
    if not weights:
        inputs = {role: _without_weights(item) for role, item in inputs.items()}
    from ftc.stores.content_cache import run_downloads

    remote = {role: item for role, item in inputs.items() if item.source in ("s3", "gcs", "dvc")}
    # remote inputs at once: a store that does not answer costs one time-out, not one per input, and the first
    # input that fails stops the others' downloads
    jobs = {
        role: functools.partial(materialize_remote, role, item, checked_by_host=checked_by_host)
        for role, item in remote.items()
    }
    fetched = run_downloads(jobs, first_failure_stops=True) if jobs else {}
    for role in plan.inputs:  # the first failure in the plan's order is the one reported
        if isinstance(fetched.get(role), BaseException) and not _stopped(fetched[role]):
            raise fetched[role]
    with StatCache() as cache:
        for role, item in inputs.items():
            if item.source == "hub":
                found[role] = item.uri.removeprefix("hf://")
            elif role in fetched:
                found[role] = fetched[role]
            elif item.source == "local":
                found[role] = _verify_local(role, item, plan.locate(item.uri), cache, whole=weights)
            else:
                raise InputUnresolvable(f"{role}: {item.source} inputs are not supported by this version of ftc")
    return found


def _stopped(exc: BaseException) -> bool:
    from ftc.stores.content_cache import DownloadStopped

    return isinstance(exc, DownloadStopped)  # stopped because another input failed: that one is reported


def _without_weights(item: PlanInput) -> PlanInput:
    if item.kind != "dir" or not item.files:
        return item
    return dataclasses.replace(item, files=tuple(f for f in item.files if not f.path.endswith(WEIGHT_SUFFIXES)))


def _verify_local(role: str, item: PlanInput, path: Path, cache: StatCache, whole: bool = True) -> Path:
    """``path``, after checking it holds the bytes ``item`` pins (with ``whole`` false, each file ``item`` lists)."""
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
    for f in item.files:
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


def materialize_remote(role: str, item: PlanInput, checked_by_host: bool = False) -> Path:
    """Download the pinned objects into the content cache (once; in parallel for a folder) and return the file, or
    a folder view of them. An object the store no longer holds, or whose bytes differ, stops the run.

    S3 and GCS objects are first checked against their pins (ETag, version, generation); a DVC remote's objects
    are named by their md5, so the bytes are checked against it (and a data file against its sha256 too)."""
    from ftc.stores.content_cache import ContentCache, DigestMismatch, run_downloads
    from ftc.stores.dvc_remote import DvcRemote
    from ftc.stores.remote import RemoteObject, RemoteProblem, store_for

    uri, pin = item.uri, dict(item.pin or {})
    # (object, cache key, expected digests) for each file
    if item.source == "dvc":
        remote = DvcRemote(pin["remote"], pin.get("endpoint"))
        if item.kind == "file":
            obj = remote.object(pin["md5"], uri.rsplit("@", 1)[0].rsplit("/", 1)[-1], size=item.size)
            objects = [(obj, remote.cache_key(pin["md5"]), {"sha256": item.digest[7:], "md5": pin["md5"]})]
        else:
            objects = []
            for f in item.files:
                md5 = f.pin["md5"]
                objects.append((remote.object(md5, f.path, size=f.size), remote.cache_key(md5), {"md5": md5}))
    elif item.kind == "file":
        obj = RemoteObject(uri, uri.rsplit("/", 1)[-1], item.size, pin)
        objects = [(obj, obj.cache_key(), {"sha256": item.digest[7:], "md5": obj.md5_hex()})]
    else:
        prefix = uri if uri.endswith("/") else uri + "/"
        objects = []
        for f in item.files:
            obj = RemoteObject(prefix + f.path, f.path, f.size, dict(f.pin or {}))
            objects.append((obj, obj.cache_key(), {"sha256": f.sha256, "md5": obj.md5_hex()}))
    cache = ContentCache()
    if checked_by_host:
        members = _from_cache(role, objects, cache)
        return (
            cache.object_path(members[objects[0][0].path]) if item.kind == "file" else _view(role, item, cache, members)
        )
    try:
        store = remote.store if item.source == "dvc" else store_for(uri)
    except RemoteProblem as exc:
        raise InputUnresolvable(f"{role}: {exc}\n    fix: {exc.hint}", exc.reason) from None

    # about 8 requests at once: one stream per object when there are many large ones (hashed as the bytes arrive),
    # parallel byte ranges of each when there are few
    large = sum(1 for obj, _, _ in objects if obj.size > cache.ranged_above)
    parts = min(8, max(1, 8 // max(1, large)))
    to_fetch = sum(obj.size for obj, key, _ in objects if cache.known(key) is None)
    progress = byte_progress(to_fetch, f"{role}: downloading")

    def counted(opener):
        def open_from(start: int, end: int | None):
            for chunk in opener(start, end):
                progress.add(len(chunk))
                yield chunk

        return open_from if progress is not None else opener

    def one(entry: tuple[RemoteObject, dict[str, str], dict[str, str | None]]) -> tuple[str, str]:
        obj, key, expected = entry
        try:
            if item.source != "dvc":
                store.check_unchanged(obj)  # even when cached: the source must still hold what the plan names
            announce = obj.size >= 1 << 20 and cache.known(key) is None
            if announce:
                log(f"{role}: downloading {obj.uri} ({obj.size / 1e6:,.1f} MB)")
            started = time.perf_counter()
            _, sha = cache.fetch(
                key,
                counted(store.opener(obj)),
                size=obj.size,
                expected_sha256=expected.get("sha256"),
                expected_md5=expected.get("md5"),
                parts=parts,
            )
            if announce:
                elapsed = max(time.perf_counter() - started, 1e-9)
                log(f"{role}: {obj.path} verified, {obj.size / 1e6 / elapsed:,.0f} MB/s")
        except DigestMismatch as exc:
            raise InputChanged(
                f"{role}: {obj.uri} is not the bytes the plan pins"
                f"\n    expected {exc.algorithm}:{exc.expected}"
                f"\n    found    {exc.algorithm}:{exc.found}"
                "\n    fix: restore it, or recompile the spec"
            ) from None
        except RemoteProblem as exc:
            if exc.changed:
                changed = InputChanged(f"{role}: {exc}\n    fix: {exc.hint}")
                changed.gone = exc.reason == "gone"
                raise changed from None
            raise InputUnresolvable(f"{role}: {exc}\n    fix: {exc.hint}", exc.reason) from None
        return obj.path, sha

    try:
        jobs = {entry[0].path: functools.partial(one, entry) for entry in objects}
        results = run_downloads(jobs, first_failure_stops=True)
    finally:
        if progress is not None:
            progress.close()
    failures = [r for r in results.values() if isinstance(r, BaseException)]
    if failures:
        raise next((f for f in failures if not _stopped(f)), failures[0])
    members = dict(results.values())
    if item.kind == "file":
        return cache.object_path(members[objects[0][0].path])
    return _view(role, item, cache, members)


def _view(role: str, item: PlanInput, cache, members: dict[str, str]) -> Path:
    from ftc.spec.canonical import digest_of

    try:
        return cache.view(item.source + "-" + digest_of(item.to_dict())[7:], members)
    except ValueError as exc:
        raise InputUnresolvable(f"{role}: the plan lists a file outside the folder: {exc}") from None


def _from_cache(role: str, objects: list, cache) -> dict[str, str]:
    """sha256 of each object from the cache alone: in a container, after the host checked every object against its
    store and downloaded it (no store client, network or credentials needed)."""
    members = {}
    for obj, key, _ in objects:
        path = cache.known(key)
        if path is None:
            raise InputUnresolvable(
                f"{role}: {obj.uri} is not in the cache at {cache.root}, "
                "where `ftc run` put it before starting this container; run the plan again"
            )
        members[obj.path] = path.name
    return members
