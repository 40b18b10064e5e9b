"""The plan a checkpoint carries (``plan.json``), as seen from the checkpoint: checked against the record's
``plan_id``, its local inputs located where the lineage record says they are (relative to the checkpoint, or for a
copy of a published checkpoint to the folder it was written in), so that
the plan's pins find and verify them from here (the base weights to serve an adapter on, the data to rerun on)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ftc.errors import InputUnresolvable, LineageBroken, PlanInvalid
from ftc.spec.plan import Placement, Plan, read_plan
from ftc.spec.text import for_terminal, redact
from ftc.stores.sources import SOURCES

from .record import located as record_location

__all__ = ["PLAN_FILE", "checkpoint_plan", "refuse_foreign_endpoints", "reproduction_plan", "written_in"]

PLAN_FILE = "plan.json"


def _recorded_locations(record: dict[str, Any]) -> dict[str, str]:
    """role -> where the record locates each local input (relative to the checkpoint, or as written if absolute)."""
    entries = [*record.get("parents", []), *record.get("datasets", [])]
    return {e["role"]: e["source"]["location"] for e in entries if e["source"].get("location") is not None}


def checkpoint_plan(folder: Path, record: dict[str, Any]) -> Plan:
    """The plan that wrote the checkpoint in ``folder`` (whose verified lineage record is ``record``)."""
    plan = _carried_plan(folder, record, older_spec=True)  # a checkpoint outlives the ftc that wrote it
    located = _recorded_locations(record)
    anchor = written_in(folder, record)
    if anchor != folder:  # a copy of a published checkpoint: its record's relative locations start where it was written
        located = {role: str(record_location(where, anchor)) for role, where in located.items()}
    inputs = {
        role: dataclasses.replace(item, uri=located[role]) if SOURCES[item.source].on_disk and role in located else item
        for role, item in plan.inputs.items()
    }
    return dataclasses.replace(plan, inputs=inputs)


def reproduction_plan(
    folder: Path, record: dict[str, Any], output: Path, *, tracker: str = "off", given: str | None = None
) -> Plan:
    """The plan that wrote the checkpoint in ``folder`` (verified record ``record``), to run again as it is (the same
    bytes, so the same plan_id and the same plan.json in every checkpoint): placed so that its local inputs are found
    where the record locates them, its output goes to ``output``, it stops after the checkpoint's step, its
    checkpoints name this one as what they reproduce, and it feeds ``tracker`` (``off``, or one the caller names:
    never the plan's own logger, which the checkpoint's author chose). ``given``: the checkpoint as the caller named
    it, which the rerun's records keep as given."""
    plan = _carried_plan(folder, record, older_spec=False)
    located = _recorded_locations(record)
    locations = {
        item.uri: str(record_location(located[role], written_in(folder, record)))  # never another user's home
        for role, item in plan.inputs.items()
        if SOURCES[item.source].on_disk and role in located
    }
    locations[plan.output_dir] = str(output.resolve())
    # never None (the plan's own logger): the checkpoint's author chose that
    placement = Placement(locations, record["results"]["step"], str(folder.resolve()), tracker or "off", given)
    return dataclasses.replace(plan, placement=placement)


def refuse_foreign_endpoints(plan: Plan, roles: set[str] | None = None) -> None:
    """Before a carried plan's inputs (those of ``roles``; all by default) are fetched: a DVC input's pin may name
    the S3 endpoint its repository configured (``endpointurl``). In a checkpoint's plan that is whatever its author
    wrote, and fetching would send requests signed with this environment's credentials there, so such an input is
    read only when the environment names the same endpoint (exit 11 otherwise, saying how to trust it)."""
    ours = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    for role, item in sorted(plan.inputs.items()):
        endpoint = SOURCES[item.source].endpoint(item)
        if (roles is None or role in roles) and endpoint and str(endpoint).rstrip("/") != ours.rstrip("/"):
            raise InputUnresolvable(
                f"{role}: the checkpoint's plan reads {for_terminal(redact(item.uri))} through the S3 endpoint "
                f"{for_terminal(redact(str(endpoint)))}, and this environment's credentials go only to the endpoint "
                "the environment names\n    fix: if you trust that endpoint, set AWS_ENDPOINT_URL to it and run again",
                "unconfigured",
            )


def _carried_plan(folder: Path, record: dict[str, Any], *, older_spec: bool) -> Plan:
    path = folder / PLAN_FILE
    if not path.exists():
        raise LineageBroken(
            f"{folder}: no {PLAN_FILE}: the checkpoint was written before checkpoints carried the plan that wrote them"
            "\n    fix: train it again with this ftc"
        )
    try:
        plan = read_plan(path, older_spec=older_spec)
    except PlanInvalid as exc:
        if not older_spec and _valid_for_an_older_ftc(path):
            raise PlanInvalid(
                f"{path}: the checkpoint's plan was compiled by an older ftc ({exc}); it can be served, not rerun by"
                " this version: reproduce it with the ftc that wrote it (its version is in the plan)"
            ) from None
        raise LineageBroken(f"{folder}: the plan it carries is not valid: {exc}") from None
    if plan.plan_id != record["plan"]["plan_id"]:
        raise LineageBroken(
            f"{path}: plan_id {plan.plan_id}, but the checkpoint's lineage record names {record['plan']['plan_id']}"
            "\n    fix: restore the checkpoint's plan.json (`ftc lineage verify` checks every file)"
        )
    return plan


def _valid_for_an_older_ftc(path: Path) -> bool:
    try:
        read_plan(path, older_spec=True)
    except PlanInvalid:
        return False
    return True


def written_in(folder: Path, record: dict[str, Any]) -> Path:
    """The folder the checkpoint in ``folder`` was written in, which its record's relative locations of local parents
    are relative to: ``folder`` itself, or for a checkpoint its run published to a store (fetched or downloaded here
    into a folder of its own) the staging folder it was written in on this machine, so that a parent given as a path
    relative to the spec resolves to the file the spec named, not to a place beside the copy."""
    import re

    from ftc.spec.locations import staging_dir
    from ftc.spec.plan_format import STORE_SCHEMES
    from ftc.spec.reading import MiB, NotReadable, finite_json, read_bounded_text

    name = record.get("checkpoint", {}).get("name")
    if any(p.get("relation") == "reproduction-of" for p in record.get("parents", [])):
        return folder  # a rerun writes into a folder of its own, whatever its plan's output_dir
    try:  # the checkpoint's own plan (one of its files, just checked against its record)
        plan = finite_json(read_bounded_text(folder / PLAN_FILE, limit=16 * MiB, what="plan"))
        output, plan_id = plan["output"]["dir"], plan["plan_id"]
    except (NotReadable, OSError, ValueError, KeyError, TypeError, RecursionError):
        return folder
    if not (isinstance(output, str) and output.startswith(STORE_SCHEMES) and isinstance(plan_id, str)):
        return folder
    if plan_id != record.get("plan", {}).get("plan_id") or not re.fullmatch(r"step-[0-9]{1,12}", str(name)):
        return folder  # (the record is outside input: its name never leads out of the staging folder)
    return Path(os.path.realpath(staging_dir(plan_id) / "checkpoints" / str(name)))
