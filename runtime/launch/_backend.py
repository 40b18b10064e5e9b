"""Which backend runs a plan: the local Python environment, or the container engine with the plan's image.

auto (the default): docker when the plan names an image and an engine answers; otherwise local. The choice and its
reason are printed before anything starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.errors import EngineUnavailable
from ftc.spec.plan import Plan, read_plan

__all__ = ["choose_backend", "run"]


def choose_backend(plan: Plan, requested: str) -> tuple[str, str]:
    """(backend, why) for ``requested`` in auto|local|docker|ray."""
    image = plan.image
    if requested in ("local", "ray"):
        return requested, f"--backend {requested}"
    if requested == "docker":
        return "docker", "--backend docker"
    if image is None:
        return "local", "the plan names no image"
    from ftc.images.engine import connect, engine_address

    try:
        connect("choosing a backend")
    except EngineUnavailable as exc:
        return "local", f"the plan names image {image.requested}, but {str(exc).removeprefix('choosing a backend: ')}"
    return "docker", f"the plan names image {image.requested} and the engine at {engine_address()} answers"


def run(
    plan_path: str | Path,
    *,
    backend: str = "auto",
    gpus: str = "auto",
    mounts: tuple[str, ...] = (),
    ray_address: str | None = None,
    max_failures: int = 2,
    log: Callable[[str], None] = print,
    **options: Any,
) -> None:
    """Run the plan at ``plan_path`` with the chosen backend; ``options`` are run_plan's (resume, rendezvous)."""
    plan_path = Path(plan_path)
    plan = read_plan(plan_path)
    chosen, why = choose_backend(plan, backend)
    log(f"backend: {chosen} ({why})")
    if chosen != "ray":
        from .resources import resources_note

        note = resources_note(plan, chosen)
        if note is not None:
            log(note)
    if chosen == "docker":
        from .docker import GpuRequest, run_in_container
        from .publish import publishing

        # an output_dir in a store: this process uploads what the container stages (no credentials go in there)
        rendezvous = options.get("rendezvous")
        node0 = rendezvous is None or rendezvous.node_rank == 0
        with publishing(plan, resume=options.get("resume", False)) if node0 else contextlib.nullcontext():
            return run_in_container(plan, plan_path, gpus=GpuRequest.parse(gpus), mounts=mounts, log=log, **options)
    if chosen == "ray":
        from .ray import run_on_ray

        return run_on_ray(
            plan, plan_path, address=ray_address, max_failures=max_failures, resume=options.get("resume", False),
            log=log,
        )  # fmt: skip
    from .local import run_plan

    return run_plan(plan, plan_path, **options)
