"""The Ray resources a plan's training workers ask for (llmforge's ``worker_resources``, beside a CPU or a GPU each),
and the check, before anything is submitted, that the cluster's nodes can hold them: Ray itself would leave a job
whose resources no node offers waiting for ever. ``trainer_resources`` (llmforge's trainer, which Ray Train placed
beside the rank-0 worker) are checked on one node together with one worker's; Ray Train's current engine gives its
trainer no resources and every worker the same, so they are checked and recorded, not reserved. The local and
docker backends run no Ray: :func:`resources_note` is the line that says so."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ftc.errors import EngineUnavailable
from ftc.spec.plan import Plan
from ftc.spec.resources import amount_text, describe_resources

__all__ = ["check_cluster", "resources_note", "worker_request"]

#: Ray counts resources in units of 1/10000 (so 0.001 of a resource is 10 units)
_UNITS = 10_000


def worker_request(plan: Plan, gpu: bool) -> dict[str, float] | None:
    """What each training worker asks Ray for: a GPU (on a cluster with GPUs) or a CPU, and the plan's
    ``worker_resources`` (which may name CPU or GPU themselves); None when the plan asks for nothing more."""
    extra = dict(plan.spec.worker_resources)
    if not extra:
        return None
    return {**({"GPU": 1.0} if gpu else {"CPU": 1.0}), **extra}


def resources_note(plan: Plan, backend: str) -> str | None:
    """The line the local and docker backends print for a plan that asks for Ray resources (recorded in the plan
    and every checkpoint's plan.json; not an error)."""
    asked = [
        f"{key} {describe_resources(value)}"
        for key, value in (
            ("worker_resources", plan.spec.worker_resources),
            ("trainer_resources", plan.spec.trainer_resources),
        )
        if value
    ]
    if not asked:
        return None
    return (
        f"resources: {'; '.join(asked)} apply on Ray (--backend ray); the {backend} backend runs here and records them"
    )


def check_cluster(
    nodes: Iterable[Mapping[str, Any]],
    per_worker: Mapping[str, float],
    trainer: Mapping[str, float],
    workers: int,
    where: str,
) -> None:
    """Raise :class:`EngineUnavailable` (exit 13) unless the cluster's live nodes (``ray.nodes()``) can hold
    ``workers`` workers of ``per_worker`` each and one node can hold ``trainer`` beside one worker: naming each
    resource no node offers, the amount asked, and what the cluster has."""
    alive = [dict(node.get("Resources") or {}) for node in nodes if node.get("Alive")]
    asked = {k: v for k, v in per_worker.items() if v > 0}
    fix = (
        "\n    fix: give nodes of the cluster that resource (`ray start --resources '{\"NAME\": AMOUNT}'`, or the"
        " cluster's node types), or remove it from the spec's worker_resources / trainer_resources and recompile"
    )
    missing = [
        f"{name} {amount_text(amount)} ({role})"
        for role, wanted in (("each worker", asked), ("the trainer", trainer))
        for name, amount in wanted.items()
        if amount > 0 and not any(name in node for node in alive)
    ]
    if missing:
        raise EngineUnavailable(
            f"the Ray cluster at {where} has no node that offers {', '.join(missing)}: the job would wait for ever"
            f"\n    the cluster has: {_has(alive)}{fix}"
        )
    room = sum(_fits(node, asked) for node in alive)
    if room < workers:
        raise EngineUnavailable(
            f"the Ray cluster at {where} can hold {room} of the plan's {workers} workers, each asking for"
            f" {describe_resources(asked)}: the job would wait for ever\n    its nodes have: "
            + "; ".join(_has([node], names=asked) for node in alive)
            + fix.replace("that resource", "those resources")
        )
    if trainer and not any(_fits(node, _plus(asked, trainer)) for node in alive):
        raise EngineUnavailable(
            f"no node of the Ray cluster at {where} holds the trainer's {describe_resources(trainer)} beside a worker's"
            f" {describe_resources(asked)}\n    its nodes have: "
            + "; ".join(_has([node], names=_plus(asked, trainer)) for node in alive)
            + fix.replace("that resource", "those resources")
        )


def _fits(node: Mapping[str, float], asked: Mapping[str, float]) -> int:
    """How many workers asking ``asked`` the node holds (in Ray's units, so 0.001 x 1000 is exactly 1)."""
    counts = [_units(node.get(name, 0)) // _units(amount) for name, amount in asked.items() if _units(amount) > 0]
    return min(counts) if counts else 1_000_000


def _units(amount: float) -> int:
    return math.floor(float(amount) * _UNITS + 0.5)


def _plus(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {name: a.get(name, 0) + b.get(name, 0) for name in {**a, **b}}


def _has(nodes: list[Mapping[str, float]], names: Mapping[str, float] | None = None) -> str:
    """What ``nodes`` offer in all (only ``names``, when given), Ray's per-node ``node:...`` markers left out."""
    total: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.items():
            if not name.startswith("node:") and (names is None or name in names):
                total[name] = total.get(name, 0) + amount
    return describe_resources(dict(sorted(total.items()))) if total else "nothing of these"
