"""The lineage of a run: its parents checked before training, and the record sealed into every checkpoint it writes.

A parent checkpoint that carries a lineage record must still be the files that record names; otherwise the run
stops before training (a chain is only worth something if every link holds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken
from ftc.spec.canonical import digest_of
from ftc.spec.plan import PARENT_ROLES, Plan, PlanInput
from ftc.stores.hashing import FileDigest, StatCache, manifest_digest, walk_files
from ftc.stores.sources import SOURCES

from .record import (
    LINEAGE_VERSION,
    MAX_CHAIN_DEPTH,
    MEASURED,
    SIGNATURE_FILE,
    chain_depth,
    checkpoint_files,
    checkpoint_parent,
    checkpoint_section,
    environment,
    location_of,
    read_record,
    seal,
    too_long,
)
from .verify import files_problems, record_problems

__all__ = ["Lineage"]


def _origin(plan: Plan) -> tuple[Path, dict[str, Any], str] | None:
    """The checkpoint a reproduction reproduces (its placement names it), checked against its own record, and how
    the caller named it."""
    folder = plan.placement.reproduction_of if plan.placement is not None else None
    if folder is None:
        return None
    path = Path(folder)
    try:
        record = read_record(path)
    except ValueError as exc:
        raise LineageBroken(f"the checkpoint reproduced: {exc}") from None
    if record is None:
        raise LineageBroken(f"{path}: the checkpoint reproduced has no lineage record")
    if chain_depth(record) >= MAX_CHAIN_DEPTH:  # the rerun's records embed it: they could not be read back
        raise LineageBroken(too_long(path))
    problems = record_problems(record, str(path))
    with StatCache() as cache:  # `ftc reproduce` has just verified it: each rank need not read it all again
        found = {f.path: f.sha256 for f in checkpoint_files(path, cache)}
    problems += files_problems(record["checkpoint"]["files"], found, str(path))
    if problems:
        raise LineageBroken(
            f"{path}: the checkpoint reproduced no longer matches its record\n    " + "\n    ".join(problems)
        )
    return path, record, plan.placement.reproduction_given or str(path)


def _relation(role: str, mode: str) -> str:
    if role == "adapter":
        return "adapter-continued"
    return "finetune" if mode == "full" else "adapter"


def _input_files(item: PlanInput, path: Path | str) -> dict[str, str] | None:
    """path -> sha256 of each file of an input, as verified for this run: a local folder's from the plan; a
    downloaded one's from the content cache, whose objects are named by their sha256."""
    if not isinstance(path, Path) or item.kind != "dir":
        return None
    if SOURCES[item.source].on_disk:
        return item.file_sha256
    return {name: Path(os.readlink(path / name)).name for name in walk_files(path)}


def _store_pins(item: PlanInput) -> dict[str, dict[str, Any]]:
    """For each file of a store folder, its size and the store's pin of it (S3 ETag and version, GCS generation),
    so `ftc lineage verify` can fetch exactly these bytes again; nothing for other inputs."""
    if not SOURCES[item.source].store_pins:
        return {}
    return {f.path: {"size": f.size, "pin": dict(f.pin)} for f in item.files or () if f.pin}


def _source(item: PlanInput, path: Path | str, checkpoint: Path, given: str | None = None) -> dict[str, Any]:
    source = {k: v for k, v in item.to_dict().items() if k in ("source", "uri", "kind", "pin")}
    if given is not None:
        source["given"] = given
    if SOURCES[item.source].on_disk and isinstance(path, Path):
        source["location"] = location_of(path, checkpoint, item.uri)
        del source["uri"]  # relative to the plan, which the record does not travel with
    return source


@dataclass
class Lineage:
    """Built once per run from the plan and its verified inputs; ``record`` makes each checkpoint's record."""

    plan: Plan
    paths: dict[str, Path | str]
    parents: dict[str, dict[str, Any]]  # role -> the parent checkpoint's own lineage record
    env: dict[str, Any]
    #: ftc reproduce: the checkpoint this run reproduces, its record (a parent with relation reproduction-of), and
    #: the path as the caller gave it
    origin: tuple[Path, dict[str, Any], str] | None = None

    @classmethod
    def check(cls, plan: Plan, paths: dict[str, Path | str], image: dict[str, Any] | None = None) -> Lineage:
        """Check every parent that carries a lineage record against it; raise :class:`LineageBroken` if not.
        ``image``: the container the run is in, if any (for the environment section)."""
        parents = {}
        for role in PARENT_ROLES:
            path = paths.get(role)
            if not isinstance(path, Path) or not path.is_dir():
                continue
            try:
                record = read_record(path)
            except ValueError as exc:
                raise LineageBroken(f"{role}: {exc}") from None
            if record is None:
                continue
            if chain_depth(record) >= MAX_CHAIN_DEPTH:  # the checkpoint this run writes could not be read back
                raise LineageBroken(f"{role}: {too_long(path)}")
            where = f"{role} {plan.inputs[role].uri}"
            problems = record_problems(record, where)
            found = _input_files(plan.inputs[role], path) or {}
            files = {k: v for k, v in found.items() if k not in ("lineage.json", SIGNATURE_FILE)}  # beside the files
            problems += files_problems(record["checkpoint"]["files"], files, where)
            if problems:
                raise LineageBroken(
                    f"{role}: the parent checkpoint no longer matches its own lineage record\n    "
                    + "\n    ".join(problems)
                    + "\n    fix: continue from an intact checkpoint (`ftc lineage verify` names what changed)"
                )
            parents[role] = record
        return cls(plan, paths, parents, environment(image), _origin(plan))

    def record(
        self,
        folder: Path,
        final: Path,
        results: dict[str, Any],
        execution: dict[str, Any],
        measured: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The sealed record of the checkpoint being written in ``folder`` (renamed to ``final`` once whole), with
        what was ``measured`` (wall time) beside the seal."""
        plan = self.plan
        parents = []
        for role in PARENT_ROLES:
            item = plan.inputs.get(role)
            if item is None:
                continue
            path = self.paths[role]
            files = _input_files(item, path)
            entry: dict[str, Any] = {
                "role": role,
                "relation": _relation(role, plan.mode),
                "source": _source(item, path, final, plan.spec.given_locations().get(role)),
                # a folder's digest is its manifest's, whether it was local or downloaded
                "digest": item.digest
                or (manifest_digest([FileDigest(n, 0, sha) for n, sha in files.items()]) if files else None),
            }
            if files is not None:
                pins = _store_pins(item)
                entry["files"] = [
                    {"path": name, "sha256": sha, **pins.get(name, {})} for name, sha in sorted(files.items())
                ]
            if role in self.parents:
                entry["record_id"] = self.parents[role]["record_id"]
                entry["lineage"] = self.parents[role]
            parents.append(entry)
        if self.origin is not None:
            path, origin, given = self.origin
            parents.append(checkpoint_parent(path, origin, "reproduction-of", final, given))
        datasets = []
        for role in ("train", "valid"):
            item = plan.inputs.get(role)
            if item is None:
                continue
            source = _source(item, self.paths[role], final, plan.spec.given_locations().get(role))
            datasets.append(
                {
                    "role": role,
                    "source": source,
                    "sha256": item.digest,
                    "examples": results["used"].get(role, 0) + results["skipped"].get(role, 0),
                    "examples_used": results["used"].get(role, 0),
                    "examples_skipped": results["skipped"].get(role, 0),
                    **_pinned_reference(results, role),
                }
            )
        record = {
            "lineage_version": LINEAGE_VERSION,
            "checkpoint": {
                **checkpoint_section(folder),
                "name": final.name,
                "model_id": plan.architecture.model_id,
                "kind": "full" if plan.mode == "full" else "adapter",
            },
            "parents": parents,
            "datasets": datasets,
            "plan": {"plan_id": plan.plan_id, "spec_digest": plan.spec_digest, "mode": plan.mode},
            "environment": self.env,
            "execution": {
                **execution,
                "deepspeed_config_digest": digest_of(dict(plan.deepspeed)),
                "seed": plan.spec.seed,
            },
            "results": {k: v for k, v in results.items() if k not in ("skipped", "used", "reference_logprobs")},
        }
        sealed = seal(record)
        return {**sealed, MEASURED: measured} if measured is not None else sealed


def _pinned_reference(results: dict[str, Any], role: str) -> dict[str, Any]:
    """A preference run's reference log-probabilities of the data input ``role``, as its dataset entry pins them."""
    pinned = results.get("reference_logprobs", {}).get(role)
    return {"reference_logprobs": pinned} if pinned is not None else {}
