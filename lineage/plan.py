"""The plan a checkpoint carries (``plan.json``), as seen from the checkpoint: checked against the record's
``plan_id``, its local inputs located where the lineage record says they are (relative to the checkpoint), so that
the plan's pins find and verify them from here (the base weights to serve an adapter on, the data to rerun on)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken, PlanInvalid
from ftc.spec.plan import Plan, read_plan

__all__ = ["PLAN_FILE", "checkpoint_plan"]

PLAN_FILE = "plan.json"


def _recorded_locations(record: dict[str, Any]) -> dict[str, str]:
    """role -> where the record locates each local input (relative to the checkpoint, or as written if absolute)."""
    entries = [*record.get("parents", []), *record.get("datasets", [])]
    return {e["role"]: e["source"]["location"] for e in entries if e["source"].get("location") is not None}


def checkpoint_plan(folder: Path, record: dict[str, Any]) -> Plan:
    """The plan that wrote the checkpoint in ``folder`` (whose verified lineage record is ``record``)."""
    path = folder / PLAN_FILE
    if not path.exists():
        raise LineageBroken(
            f"{folder}: no {PLAN_FILE}: the checkpoint was written before checkpoints carried the plan that wrote them"
            "\n    fix: train it again with this ftc"
        )
    try:
        plan = read_plan(path, older_spec=True)  # a checkpoint outlives the ftc that wrote it
    except PlanInvalid as exc:
        raise LineageBroken(f"{folder}: the plan it carries is not valid: {exc}") from None
    if plan.plan_id != record["plan"]["plan_id"]:
        raise LineageBroken(
            f"{path}: plan_id {plan.plan_id}, but the checkpoint's lineage record names {record['plan']['plan_id']}"
            "\n    fix: restore the checkpoint's plan.json (`ftc lineage verify` checks every file)"
        )
    located = _recorded_locations(record)
    inputs = {
        role: dataclasses.replace(item, uri=located[role]) if item.source == "local" and role in located else item
        for role, item in plan.inputs.items()
    }
    return dataclasses.replace(plan, inputs=inputs)
