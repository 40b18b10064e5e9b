"""Before any training: find every input the plan pins and check it is still the same bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ftc._hashing import StatCache, file_changes, hash_file, hash_tree, manifest_digest
from ftc.errors import InputChanged, InputUnresolvable

__all__ = ["verify_inputs"]


def _locate(uri: str, plan_dir: Path) -> Path:
    path = Path(os.path.expanduser(uri))
    return path if path.is_absolute() else plan_dir / path


def verify_inputs(plan: dict[str, Any], plan_dir: Path) -> dict[str, Path | str]:
    """Where each input is on this machine (a model id for unpinned hub weights). Raises :class:`InputChanged`
    naming the input, the expected and the found digest when anything differs from the plan."""
    found: dict[str, Path | str] = {}
    with StatCache() as cache:
        for role, item in plan["inputs"].items():
            if item["source"] == "hub":
                found[role] = item["uri"].removeprefix("hf://")
                continue
            if item["source"] == "s3":
                found[role] = _materialize_s3(role, item)
                continue
            if item["source"] != "local":
                raise InputUnresolvable(f"{role}: {item['source']} inputs are not supported by this version of ftc")
            path = _locate(item["uri"], plan_dir)
            if not path.exists():
                raise InputChanged(f"{role}: {path} is gone (the plan pins {item['digest']})\n    fix: restore it, or recompile the spec")
            if item["kind"] == "dir":
                files = hash_tree(path, cache)
                digest = manifest_digest(files)
                if digest != item["digest"]:
                    raise InputChanged(f"{role}: {path} changed since the plan was compiled\n" + _file_changes(item["files"], files) + f"\n    expected {item['digest']}\n    found    {digest}\n    fix: restore the pinned files, or recompile the spec to train on the new ones")
            else:
                sha, _ = hash_file(path, cache)
                if "sha256:" + sha != item["digest"]:
                    raise InputChanged(f"{role}: {path} changed since the plan was compiled\n    expected {item['digest']}\n    found    sha256:{sha}\n    fix: restore the pinned file, or recompile the spec to train on the new one")
            found[role] = path
    return found


def _materialize_s3(role: str, item: dict[str, Any]) -> Path:
    """Download the pinned objects into the content cache (once; in parallel for a folder) and return the file, or
    a folder view of them. A changed or vanished object stops the run."""
    from concurrent.futures import ThreadPoolExecutor

    from ftc._canonical import digest_of
    from ftc._content_cache import ContentCache, DigestMismatch
    from ftc._s3 import S3Object, S3Problem, check_unchanged, client, opener, split

    try:
        s3, cache = client(), ContentCache()
    except S3Problem as exc:
        raise InputUnresolvable(f"{role}: {exc}\n    fix: {exc.hint}") from None
    bucket, key = split(item["uri"])
    if item["kind"] == "file":
        entries = [{"path": key.rsplit("/", 1)[-1], "key": key, "size": item["size"], "etag": item["pin"]["etag"], "version_id": item["pin"].get("version_id"), "sha256": item["digest"][7:]}]
    else:
        prefix = key if key.endswith("/") else key + "/"
        entries = [{**f, "key": prefix + f["path"]} for f in item["files"]]

    def one(entry: dict[str, Any]) -> tuple[str, str]:
        obj = S3Object(bucket, entry["key"], entry["path"], entry["size"], entry["etag"], entry.get("version_id"))
        try:
            check_unchanged(s3, obj)  # even when cached: the source must still hold what the plan names
            _, sha = cache.fetch(obj.pin(), opener(s3, obj), expected_sha256=entry.get("sha256"))
        except DigestMismatch as exc:
            raise InputChanged(f"{role}: s3://{bucket}/{entry['key']} is not the bytes the plan pins\n    expected sha256:{exc.expected}\n    found    sha256:{exc.found}\n    fix: restore it, or recompile the spec") from None
        except S3Problem as exc:
            error = InputChanged if exc.changed else InputUnresolvable
            raise error(f"{role}: {exc}\n    fix: {exc.hint}") from None
        return entry["path"], sha

    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        members = dict(pool.map(one, entries))
    if item["kind"] == "file":
        return cache.object_path(members[entries[0]["path"]])
    return cache.view("s3-" + digest_of([item["uri"], item["files"]])[7:], members)


def _file_changes(pinned: list[dict[str, Any]], now: list) -> str:
    lines = []
    for name, before, after in file_changes({f["path"]: f["sha256"] for f in pinned}, {f.path: f.sha256 for f in now}):
        if after is None:
            lines.append(f"    {name}: missing")
        elif before is None:
            lines.append(f"    {name}: not in the plan")
        else:
            lines.append(f"    {name}: expected sha256:{before}, found sha256:{after}")
    return "\n".join(lines)
