"""The spec's Ray resources (llmforge's ``worker_resources`` and ``trainer_resources``) in a Kubernetes manifest: what
has a standard Kubernetes meaning becomes the pods' requests, and the rest is named as left out.

A Ray worker is one training process; a pod runs a node's share of them (``processes_per_node``), so a pod requests
that many workers' ``memory`` (bytes) and ``CPU``; the Master pod (node 0, where rank 0 runs: llmforge's trainer sat
beside that worker) also requests the trainer's. A worker's whole ``GPU`` count becomes the pod's ``nvidia.com/gpu``
(:func:`gpus_per_pod`: ``--k8s-gpus-per-node`` first, then the plan, then one per process), and names that are Ray's
own custom resources (``accelerator_type:A10G``, ``anyscale/...``, any other) have no Kubernetes counterpart: no
standard node label names an accelerator type (GPU operators label nodes each their own way), so such a request is
reported, not guessed at."""

from __future__ import annotations

import math
from typing import Any

from ftc.images.engine import split_reference
from ftc.spec.plan import Plan
from ftc.spec.resources import amount_text
from ftc.spec.text import for_terminal

__all__ = ["LEFT_OUT_ANNOTATION", "apply_requests", "cpu_image", "gpus_per_pod", "left_out"]

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


def gpus_per_pod(plan: Plan, given: int | None) -> int:
    """The ``nvidia.com/gpu`` each pod asks for (0: none, a CPU job).

    ``given`` (``--k8s-gpus-per-node``) decides when given. Else the plan does, as Ray reads it: a whole number of
    ``GPU`` in ``worker_resources`` is each worker's (process's) share, so 0 asks for none; then the image: ftc's CPU
    image (a tag ``cpu`` or ``*-cpu``, as ``ftc image build cpu`` names it) has a torch without CUDA, so a GPU would
    only keep its pods from scheduling on a cluster of CPU nodes. Else one GPU per process."""
    if given is not None:
        return int(given)
    per_node = plan.launch.processes_per_node
    per_worker = plan.spec.worker_resources.get("GPU")
    if per_worker is not None and float(per_worker).is_integer():
        return int(per_worker) * per_node
    return 0 if cpu_image(plan) else per_node


def cpu_image(plan: Plan) -> bool:
    """Whether the plan's image is named as a CPU image: its tag (as the spec asked for it) is ``cpu`` or ends in
    ``-cpu``, the flavour ``ftc image build cpu`` tags. An image given by digest alone says nothing of itself."""
    if plan.image is None:
        return False
    _, tag, _ = split_reference(plan.image.requested)
    return tag is not None and (tag == "cpu" or tag.endswith("-cpu"))


def left_out(plan: Plan) -> list[str]:
    """Each requested resource the manifest does not map, with why."""
    out = []
    for key in ("worker_resources", "trainer_resources"):
        for name, amount in getattr(plan.spec, key).items():
            if name in _MAPPED or (name, key) == ("GPU", "worker_resources") and float(amount).is_integer():
                continue  # a worker's whole GPUs are the pod's nvidia.com/gpu (gpus_per_pod)
            out.append(f"{key}.{for_terminal(name)} {amount_text(amount)}: {_why(name, key)}")
    return out


def _why(name: str, key: str) -> str:
    if name == "GPU" and key == "worker_resources":
        return "a pod asks for whole GPUs: its GPUs are --k8s-gpus-per-node's (one per process by default)"
    if name == "GPU":
        return "the trainer runs in the Master pod beside rank 0, whose GPUs are the workers'"
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
