"""The spec's Ray resources (llmforge's ``worker_resources`` and ``trainer_resources``) in a Kubernetes manifest: what
has a standard Kubernetes meaning becomes the pods' requests, and the rest is named as left out.

A Ray worker is one training process; a pod runs a node's share of them (``processes_per_node``), so a pod requests
that many workers' ``memory`` (bytes) and ``CPU``; the Master pod (node 0, where rank 0 runs: llmforge's trainer sat
beside that worker) also requests the trainer's. ``GPU`` is left to ``--k8s-gpus-per-node`` (one per process by
default), and names that are Ray's own custom resources (``accelerator_type:A10G``, ``anyscale/...``, any other) have
no Kubernetes counterpart: no standard node label names an accelerator type (GPU operators label nodes each their own
way), so such a request is reported, not guessed at."""

from __future__ import annotations

import math
from typing import Any

from ftc.spec.plan import Plan
from ftc.spec.resources import amount_text
from ftc.spec.text import for_terminal

__all__ = ["LEFT_OUT_ANNOTATION", "apply_requests", "left_out"]

#: the annotation of the PyTorchJob that says which requests the manifest leaves out, and why
LEFT_OUT_ANNOTATION = "ftc.dev/resources-left-out"
#: Ray's resource name -> the container resource it is requested as
_MAPPED = {"memory": "memory", "CPU": "cpu"}


def apply_requests(template: dict[str, Any], plan: Plan, *, master: bool) -> None:
    """Add the pod's requests for the plan's resources to ``template``'s container (none: unchanged)."""
    per_node = plan.launch.processes_per_node
    trainer = plan.spec.trainer_resources if master else {}
    requests = {}
    for name, kind in _MAPPED.items():
        amount = plan.spec.worker_resources.get(name, 0) * per_node + trainer.get(name, 0)
        if amount > 0:
            requests[kind] = _quantity(kind, amount)
    if requests:
        container = template["spec"]["containers"][0]
        container.setdefault("resources", {})["requests"] = requests


def left_out(plan: Plan) -> list[str]:
    """Each requested resource the manifest does not map, with why."""
    out = []
    for key in ("worker_resources", "trainer_resources"):
        for name, amount in getattr(plan.spec, key).items():
            if name not in _MAPPED:
                out.append(f"{key}.{for_terminal(name)} {amount_text(amount)}: {_why(name)}")
    return out


def _why(name: str) -> str:
    if name == "GPU":
        return "the pods' GPUs are --k8s-gpus-per-node's (one per process by default)"
    if name.startswith("accelerator_type:"):
        return "no standard Kubernetes label names an accelerator type; add the cluster's own nodeSelector by hand"
    if name.startswith("anyscale/"):
        return "an Anyscale cluster's own resource, with no Kubernetes counterpart"
    return "a Ray custom resource, with no Kubernetes counterpart"


def _quantity(kind: str, amount: float) -> str:
    if kind == "memory":
        return str(math.ceil(amount))  # bytes
    millis = math.ceil(amount * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
