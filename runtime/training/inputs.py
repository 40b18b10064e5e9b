"""Before any training: find every input the plan pins and check it is still the same bytes; once they are read,
check that none was written in between."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

from ftc.errors import InputChanged, InputUnresolvable
from ftc.spec.plan import Plan, PlanInput
from ftc.stores.hashing import StatCache
from ftc.stores.sources import SOURCES, SourceKind
from ftc.stores.stamps import ReadRecord
from ftc.stores.weights_folder import WEIGHT_SUFFIXES

from .progress import byte_progress, log

__all__ = ["FoundInputs", "materialize_remote", "verify_inputs"]


class FoundInputs(dict):
    """role -> where the input is on this machine (a path; a model id for unpinned hub weights), with each file as
    it was when its bytes were checked: :meth:`check_unchanged` once they are read."""

    def __init__(self, found: dict[str, Path | str], read: ReadRecord):
        super().__init__(found)
        self.read = read

    def check_unchanged(self) -> None:
        """Raise :class:`InputChanged` naming each file changed since it was checked (written, replaced, removed or
        added; a link turned elsewhere): what was read of it may not be the bytes the plan pins."""
        changed = self.read.changed()
        if not changed:
            return
        roles = {path: role for role, path in self.items() if isinstance(path, Path)}

        def role_of(file: Path) -> str:
            return next((roles[p] for p in (file, *file.parents) if p in roles), "input")

        lines = [f"    {role_of(file)}: {file}" for file in changed]
        raise InputChanged(
            "an input changed while ftc read it, after its bytes were checked against the plan (a file written, "
            "replaced, removed or added; a link turned elsewhere): what was read may not be the bytes the plan "
            "pins:\n" + "\n".join(lines)
            + "\n    fix: run again once nothing writes the input"
        )  # fmt: skip


def verify_inputs(
    plan: Plan, roles: set[str] | None = None, weights: bool = True, *, checked_by_host: bool = False
) -> FoundInputs:
    """Where each input (of ``roles``; default: all) is on this machine (a model id for unpinned hub weights).
    Raises :class:`InputChanged` naming the input, the expected and the found digest when anything differs from the
    plan. Without ``weights``, a folder's weight files are neither fetched nor checked (its other files are): what
    reading a tokenizer needs, for any model size. ``checked_by_host``: in a container that ``ftc run --backend
    docker`` started after checking every fetched input against its store and putting it in the (shared) cache:
    they are read from the cache, with no store credentials."""
    found: dict[str, Path | str] = {}
    read = ReadRecord()
    inputs = {role: item for role, item in plan.inputs.items() if roles is None or role in roles}
    from ftc.stores.downloads import run_downloads

    kinds = {role: _kind(role, item) for role, item in inputs.items()}
    if not weights:  # a fetched folder's weights are not downloaded; a local one's are not hashed (find's whole)
        inputs = {role: _without_weights(item) if kinds[role].fetched else item for role, item in inputs.items()}
    # fetched inputs at once: a store that does not answer costs one time-out, not one per input, and the first
    # input that fails stops the others' downloads
    jobs = {
        role: functools.partial(materialize_remote, role, item, checked_by_host=checked_by_host, read=read)
        for role, item in inputs.items()
        if kinds[role].fetched
    }
    fetched = run_downloads(jobs, first_failure_stops=True) if jobs else {}
    for role in plan.inputs:  # the first failure in the plan's order is the one reported
        if isinstance(fetched.get(role), BaseException) and not _stopped(fetched[role]):
            raise fetched[role]
    with StatCache() as cache:
        for role, item in inputs.items():
            found[role] = fetched[role] if role in fetched else kinds[role].find(role, item, plan, cache, whole=weights)
        read.update(cache.read)
    return FoundInputs(found, read)


def _kind(role: str, item: PlanInput) -> SourceKind:
    kind = SOURCES.get(item.source)
    if kind is None:
        raise InputUnresolvable(f"{role}: {item.source} inputs are not supported by this version of ftc")
    return kind


def _stopped(exc: BaseException) -> bool:
    from ftc.stores.downloads import DownloadStopped

    return isinstance(exc, DownloadStopped)  # stopped because another input failed: that one is reported


def _without_weights(item: PlanInput) -> PlanInput:
    if item.kind != "dir" or not item.files:
        return item
    return dataclasses.replace(item, files=tuple(f for f in item.files if not f.path.endswith(WEIGHT_SUFFIXES)))


def materialize_remote(
    role: str, item: PlanInput, checked_by_host: bool = False, read: ReadRecord | None = None
) -> Path:
    """Download the pinned objects into the content cache (once; in parallel for a folder) and return the file, or
    a folder view of them. An object the store no longer holds, or whose bytes differ, stops the run. ``read``
    gains each returned file as it was when verified.

    The input's kind names the objects, the bytes each must have and the store: objects of a store that pins them
    (S3 ETag and version, GCS generation) are first checked against their pins; a DVC remote's objects are named by
    their md5, so the bytes are checked against it (and a data file against its sha256 too)."""
    from ftc.stores.content_cache import ContentCache
    from ftc.stores.remote import RemoteProblem

    kind = _kind(role, item)
    objects = kind.objects(item)  # (object, cache key, expected digests) for each file
    cache = ContentCache()
    if checked_by_host:
        members = _from_cache(role, objects, cache)
    else:
        try:
            store = kind.store(item)
        except RemoteProblem as exc:
            raise InputUnresolvable(f"{role}: {exc}\n    fix: {exc.hint}", exc.reason) from None
        members = _download(role, objects, cache, store, check_pins=kind.store_pins)
    found = cache.object_path(members[objects[0][0].path]) if item.kind == "file" else _view(role, item, cache, members)
    if read is not None:
        for rel, sha in members.items():
            verified = cache.object_path(sha)
            opened = found if item.kind == "file" else found / rel
            read.files[opened] = cache.read.files[verified]  # (stamped when the cache verified or placed it)
        if item.kind != "file":
            read.folders[found] = frozenset(members)  # a file planted in the view would be read too
    return found


def _download(role: str, objects: list, cache, store, *, check_pins: bool) -> dict[str, str]:
    """path -> sha256 of each of ``objects``, fetched from ``store`` into ``cache`` (each pin checked first when
    ``check_pins``), with one progress line for them all."""
    from ftc.stores.downloads import run_downloads

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

    fetch = functools.partial(_fetch_one, role, cache, store, check_pins=check_pins, parts=parts, counted=counted)
    try:
        results = run_downloads(
            {entry[0].path: functools.partial(fetch, entry) for entry in objects}, first_failure_stops=True
        )
    finally:
        if progress is not None:
            progress.close()
    failures = [r for r in results.values() if isinstance(r, BaseException)]
    if failures:
        raise next((f for f in failures if not _stopped(f)), failures[0])
    return dict(results.values())


def _fetch_one(role: str, cache, store, entry: tuple, *, check_pins: bool, parts: int, counted) -> tuple[str, str]:
    """(path, sha256) of one object, in the cache once its bytes are checked; the errors say which input."""
    from ftc.stores.content_cache import DigestMismatch
    from ftc.stores.remote import RemoteProblem

    obj, key, expected = entry
    try:
        if check_pins:
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
