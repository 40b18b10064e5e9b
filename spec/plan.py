"""The run plan document: sealing it with its plan_id, writing it atomically, and reading it back validated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ftc._atomic import write_text_atomic
from ftc._canonical import digest_of
from ftc.errors import PlanInvalid, UsageError

from ._schema import _validator
from .model import JobSpec

__all__ = ["PLAN_VERSION", "seal_plan", "plan_text", "write_plan", "read_plan"]

PLAN_VERSION = 1


def seal_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` with ``plan_id`` set to the sha256 of its canonical JSON (without plan_id)."""
    body = {k: v for k, v in plan.items() if k != "plan_id"}
    return {**body, "plan_id": digest_of(body)}


def plan_text(plan: dict[str, Any]) -> str:
    """The file form of a plan: sorted keys, two-space indent, trailing newline. Deterministic."""
    return json.dumps(plan, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_plan(plan: dict[str, Any], path: str | Path) -> Path:
    """Write ``plan`` to ``path`` atomically (temp file in the same folder, then rename)."""
    return write_text_atomic(path, plan_text(plan))


def read_plan(path: str | Path) -> dict[str, Any]:
    """Load a plan and check it against plan.schema.json, the job schema (its spec section) and its plan_id.

    Raises :class:`PlanInvalid` listing every problem (nothing may run from a plan that fails here), and
    :class:`UsageError` when there is no such file.
    """
    path = Path(path)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plan file; make one with `ftc compile SPEC -o {path}`") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder; give the plan file (plan.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanInvalid(f"{path}: not a JSON plan ({exc})") from None
    problems = plan_problems(plan)
    if problems:
        raise PlanInvalid(f"{path}: invalid plan:\n" + "\n".join(f"  {p}" for p in problems) + "\n    fix: recompile the spec with `ftc compile`")
    return plan


def plan_problems(plan: Any) -> list[str]:
    """Every way ``plan`` differs from what `ftc compile` writes, as readable lines."""
    problems = []
    for error in sorted(_validator("plan.schema.json").iter_errors(plan), key=lambda e: list(map(str, e.absolute_path))):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{where}: {error.message}")
    if problems:
        return problems
    for error in _validator("job.schema.json").iter_errors(plan["spec"]):
        where = "$.spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{where}: {error.message}")
    missing = [f.name for f in dataclasses.fields(JobSpec) if f.name not in plan["spec"]]
    if missing:  # a plan compiled before these settings existed: its spec is not normalized by this ftc
        problems.append(f"$.spec: no {', '.join(missing)} (the plan was compiled by an older ftc)")
    if plan["plan_version"] != PLAN_VERSION:
        problems.append(f"$.plan_version: this ftc reads plan version {PLAN_VERSION}")
    expected = seal_plan(plan)["plan_id"]
    if plan["plan_id"] != expected:
        problems.append(f"$.plan_id: the plan was edited after compiling (plan_id {plan['plan_id']} but the content hashes to {expected})")
    return problems


