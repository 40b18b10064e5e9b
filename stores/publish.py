"""A run's checkpoints in an object store: the layout under an ``output_dir`` prefix, and the marker that makes each
checkpoint visible only once every byte of it is there.

    PREFIX/checkpoints/step-000032/...          the checkpoint's files, as written locally (lineage.json among them)
    PREFIX/checkpoints/step-000032.complete     the marker, uploaded last: the record_id and every file's size and
                                                sha256, and whether it is the run's last checkpoint
    PREFIX/best, PREFIX/latest                  pointers to the run's best checkpoint and its newest (pointers.py),
                                                each written after the marker of the checkpoint it names
    PREFIX/metrics.jsonl, PREFIX/summary.json   the run's metrics so far, and its summary once it ends

A reader (the compiler, for a spec that continues from ``s3://…/checkpoints/step-N/``) takes a checkpoint only when
its marker is there and names what the listing holds; anything else is an upload cut short. A checkpoint the run no
longer keeps (``num_checkpoints_to_keep``) goes the other way round: its marker first, then its files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ftc.spec.reading import finite_json

from .objects import RemoteProblem, Store, WritableStore

__all__ = [
    "MARKER_SUFFIX",
    "download_checkpoint",
    "fetch_pinned_folder",
    "marker_problems",
    "marker_uri",
    "publish_checkpoint",
    "published_layout",
    "read_marker",
    "unpublish_checkpoint",
]

MARKER_SUFFIX = ".complete"
#: a marker lists a checkpoint's files: thousands at most (a sharded model), never megabytes
_MARKER_LIMIT = 4 << 20
#: where ftc puts a checkpoint under an output prefix: a folder there must have its marker to be read
_LAYOUT = re.compile(r".*/checkpoints/step-\d+/?$")


def published_layout(uri: str) -> bool:
    """Whether ``uri`` is a checkpoint folder in ftc's layout under an output prefix."""
    return bool(_LAYOUT.fullmatch(uri))


def _relative(path: object) -> bool:
    """A file's path inside the checkpoint: relative, forward slashes, no part that climbs out or is empty."""
    return (
        isinstance(path, str)
        and not path.startswith("/")
        and "\\" not in path
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def marker_uri(checkpoint_uri: str) -> str:
    return checkpoint_uri.rstrip("/") + MARKER_SUFFIX


def read_marker(store: Store, checkpoint_uri: str) -> dict[str, Any] | None:
    """The marker of the checkpoint at ``checkpoint_uri`` (None when there is none), checked for shape."""
    uri = marker_uri(checkpoint_uri)
    data = store.read_small(uri, _MARKER_LIMIT)  # type: ignore[attr-defined]
    if data is None:
        return None
    try:
        marker = finite_json(data.decode("utf-8"))
        files = marker["files"]
        ok = isinstance(marker["record_id"], str) and all(
            _relative(f["path"])
            and type(f["size"]) is int
            and f["size"] >= 0
            and isinstance(f["sha256"], str)
            and re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) is not None
            for f in files
        )
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise RemoteProblem(f"{uri}: not a checkpoint marker ftc wrote", "publish the checkpoint again", "changed")
    return marker


def marker_problems(checkpoint_uri: str, marker: dict[str, Any] | None, listed: dict[str, Any]) -> list[str]:
    """What keeps the checkpoint at ``checkpoint_uri`` from being read: no marker (an upload cut short), or files
    listed (path -> size) that are not the ones its marker names."""
    if marker is None:
        return [
            f"{checkpoint_uri}: its upload has not finished: {marker_uri(checkpoint_uri)}, written last, is not there"
        ]
    from .hashing import describe_changes

    return describe_changes(
        {f["path"]: f["size"] for f in marker["files"]},
        listed,
        removed=checkpoint_uri + "{path}: named by the marker, not in the store",
        added=checkpoint_uri + "{path}: in the store, not named by the marker",
        changed=checkpoint_uri + "{path}: {after} bytes, the marker says {before}",
    )


#: a checkpoint's signature, beside its files (ftc.lineage.record.SIGNATURE_FILE: stores do not import lineage)
SIGNATURE_FILE = "model.sig"


def publish_checkpoint(store: Store, checkpoint_uri: str, folder: Path, record: dict[str, Any], last: bool) -> int:
    """Upload the checkpoint in ``folder`` (whose files its lineage ``record`` names) to ``checkpoint_uri``, then its
    marker; the bytes uploaded. A run stopped half-way leaves no marker, so the upload is never taken for a whole
    checkpoint."""
    from .hashing import hash_file

    files = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in record["checkpoint"]["files"]]
    sha, size = hash_file(folder / "lineage.json")
    files.append({"path": "lineage.json", "size": size, "sha256": sha})
    signature = folder / SIGNATURE_FILE
    if signature.is_file() and not signature.is_symlink():  # a signed checkpoint keeps its signature in the store
        sha, size = hash_file(signature)
        files.append({"path": SIGNATURE_FILE, "size": size, "sha256": sha})
    prefix = checkpoint_uri.rstrip("/") + "/"
    for f in sorted(files, key=lambda f: f["path"] == "lineage.json"):  # the record after the files it names
        store.put_file(prefix + f["path"], str(folder / f["path"]))  # type: ignore[attr-defined]
    marker = {"record_id": record["record_id"], "last": last, "files": sorted(files, key=lambda f: f["path"])}
    store.put_bytes(marker_uri(checkpoint_uri), (json.dumps(marker, indent=1) + "\n").encode())  # type: ignore[attr-defined]
    return sum(f["size"] for f in files)


def unpublish_checkpoint(store: WritableStore, checkpoint_uri: str) -> int:
    """Remove the published checkpoint at ``checkpoint_uri``: its marker first, so that a removal cut short leaves
    files no reader takes for a checkpoint, then every object under it; how many objects went."""
    store.delete(marker_uri(checkpoint_uri))
    prefix = checkpoint_uri.rstrip("/") + "/"
    names = store.names(prefix)
    for name in names:
        store.delete(prefix + name)
    return len(names) + 1


def _fetched(store: Store, cache: Any, obj: Any, sha256: str, on_bytes: Callable[[int], None] | None = None) -> Path:
    """The cached copy of ``obj``, downloaded unless cached; bytes other than ``sha256`` are a change of the store's
    (:class:`RemoteProblem`, "changed"), and nothing of them is kept. ``on_bytes``: told of each chunk downloaded."""
    from .content_cache import DigestMismatch

    opener = store.opener(obj)
    if on_bytes is not None:
        plain = opener

        def opener(start: int, end: int | None) -> Iterator[bytes]:
            for chunk in plain(start, end):
                on_bytes(len(chunk))
                yield chunk

    try:
        return cache.fetch(obj.cache_key(), opener, size=obj.size, expected_sha256=sha256)[0]
    except DigestMismatch as exc:
        raise RemoteProblem(
            f"{obj.uri}: expected sha256:{exc.expected}, found sha256:{exc.found}",
            "restore the object, or use another checkpoint",
            "changed",
        ) from None


def fetch_pinned_folder(uri: str, files: list[dict[str, Any]]) -> tuple[Path | None, list[str], str | None]:
    """The files of the store folder ``uri`` that a lineage record pins (path, size, sha256 and the store's pin of
    each), fetched through the content cache: each object must still be the pinned one and hash to its sha256.
    Returns (a folder of them, or None; what differs, one line each; why the store could not be read, or None)."""
    from ftc.spec.canonical import digest_of

    from .content_cache import ContentCache
    from .objects import RemoteObject
    from .remote import store_for

    prefix = uri.rstrip("/") + "/"
    try:
        store = store_for(prefix)
    except RemoteProblem as exc:
        return None, [], f"{exc} ({exc.hint})"
    cache, members, problems = ContentCache(), {}, []
    for f in files:
        obj = RemoteObject(prefix + f["path"], f["path"], f["size"], dict(f["pin"]))
        try:
            store.check_unchanged(obj)
            members[f["path"]] = _fetched(store, cache, obj, f["sha256"]).name  # cache objects: named by sha256
        except RemoteProblem as exc:
            if not exc.changed:
                return None, problems, f"{exc} ({exc.hint})"
            problems.append(str(exc))
    if problems:
        return None, problems, None
    return cache.view("verify-" + digest_of([prefix, files])[7:], members), [], None


def download_checkpoint(
    store: Store,
    checkpoint_uri: str,
    dest: Path,
    on_bytes: Callable[[int], None] | None = None,
    marker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The published checkpoint at ``checkpoint_uri`` copied into the new folder ``dest`` (made whole under a temporary
    name, then renamed), each file checked against the sha256 its marker names; the marker. Raises
    :class:`RemoteProblem` when there is no marker, the listing is not what it names, or a file's bytes differ.
    ``on_bytes``: told of each chunk downloaded (a progress display); ``marker``: the marker, when just read with
    :func:`read_marker`."""
    import shutil

    from .atomic import clear_planted
    from .content_cache import ContentCache

    marker = marker if marker is not None else read_marker(store, checkpoint_uri)
    listed = {o.path: o for o in store.list(checkpoint_uri)}
    problems = marker_problems(checkpoint_uri, marker, {p: o.size for p, o in listed.items()})
    if problems or marker is None:
        raise RemoteProblem("\n    ".join(problems), "continue from another checkpoint", "changed")
    cache = ContentCache()
    partial = dest.with_name(f".{dest.name}.download")
    clear_planted(partial)  # a link planted there goes: the files are never copied through it
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)  # a new folder of this run's own
    for f in marker["files"]:
        cached = _fetched(store, cache, listed[f["path"]], f["sha256"], on_bytes)
        target = partial / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
    partial.rename(dest)
    return marker
