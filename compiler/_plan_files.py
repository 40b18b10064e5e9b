"""Plan files: the plan a path names (a compiled plan, or a spec compiled in memory), and a plan written with its
Kubernetes manifest in the order that leaves nothing behind that a cluster cannot run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ftc.spec.plan import PLAN_LIMIT, Plan, read_plan
from ftc.spec.reading import read_bounded_text

from ._compile import compile_spec, write_plan
from ._k8s import k8s_manifest, write_k8s_manifest
from ._k8s_resources import left_out

__all__ = ["read_or_compile_plan", "write_plan_for_k8s"]


def read_or_compile_plan(path: Path) -> Plan:
    """The plan at ``path``, or the one the spec there compiles to (in memory: nothing is written).

    A ``.json`` file is a plan when it holds a ``plan_id`` (a spec may be written as JSON too); a ``.json`` file that
    is not JSON at all is read as a plan, so that the error says what is wrong with it as a plan."""
    if path.suffix == ".json":
        try:
            document = json.loads(read_bounded_text(path, limit=PLAN_LIMIT, what="plan"))
        except ValueError:
            document = {"plan_id": None}
        if isinstance(document, dict) and "plan_id" in document:
            return read_plan(path)
    return compile_spec(path, plan_dir=path.parent).plan


def write_plan_for_k8s(
    plan: Plan,
    path: Path,
    *,
    pvc: str,
    namespace: str | None = None,
    gpus_per_node: int | None = None,
    plan_written: Callable[[Path], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Write ``plan`` to ``path`` and its Kubeflow manifest beside it (``<plan stem>.k8s.yaml``); return the
    manifest's path. The manifest is built first, so that a plan the cluster cannot run (no image, one not pinned by
    digest, paths outside the volume) is refused before anything is written; ``plan_written`` is told once the plan
    is, and ``note`` each of the spec's resource requests that the manifest leaves out."""
    k8s_manifest(plan, plan_name=path.name, pvc=pvc, namespace=namespace, gpus_per_node=gpus_per_node)
    for line in left_out(plan) if note is not None else ():
        note(f"the k8s manifest leaves out {line}")
    write_plan(plan, path)
    if plan_written is not None:
        plan_written(path)
    return write_k8s_manifest(plan, path, pvc=pvc, namespace=namespace, gpus_per_node=gpus_per_node)
