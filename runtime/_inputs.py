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
