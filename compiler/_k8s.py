"""A plan as Kubernetes documents: a ConfigMap holding the plan file, and a Kubeflow training operator PyTorchJob.

The pods see the plan's folder as it is on the compiling machine: a PersistentVolumeClaim mounted at ``/ftc/job``
holds the plan folder's local inputs in the same relative layout (and receives the output folder, which the plan
names relative to itself), and the ConfigMap's plan file is mounted over ``/ftc/job/<plan file name>``. So every
relative path in the plan means in a pod what it meant where the plan was compiled, and nothing else needs to change.

One Master pod and ``nodes - 1`` Worker pods each run ``torch.distributed.run`` for their node's share of the plan.
The spec's Ray resources become the pods' memory, CPU and GPU requests where Kubernetes has a meaning for them, and
the rest is named in an annotation (``_k8s_resources``); a plan in a CPU image asks for no GPU.
Output is deterministic: the same plan and arguments give the same bytes.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from pathlib import Path
from typing import Any

from ftc.errors import UsageError
from ftc.images import IMAGE_ENV
from ftc.spec.plan import Plan
from ftc.stores.atomic import write_text_atomic
from ftc.stores.sources import SOURCES
from ftc.stores.sources.local import is_absolute, is_outside

from ._k8s_resources import LEFT_OUT_ANNOTATION, apply_requests, gpus_per_pod, left_out

__all__ = ["JOB_DIR", "k8s_manifest", "write_k8s_manifest"]

#: where the plan's folder (the PersistentVolumeClaim) is mounted in every pod
JOB_DIR = "/ftc/job"
#: the training operator runs the container of this name, and takes the master port from the port of this name
CONTAINER = "pytorch"
PORT_NAME, PORT = "pytorchjob-port", 23456  # the operator's defaults, stated so the manifest says what runs
#: the pods run as this user and group (non-root: the `ftc` user of the runtime images in images/); the claim must be
#: writable by them (fsGroup makes it so where the volume type supports it)
RUN_AS = 1000

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# a ConfigMap holds at most 1 MiB; `kubectl apply` also copies the object into an annotation of at most 256 KiB
_CONFIGMAP_MAX_BYTES = 250_000


def k8s_manifest(
    plan: Plan,
    *,
    plan_name: str,
    pvc: str,
    namespace: str | None = None,
    job_name: str | None = None,
    gpus_per_node: int | None = None,
) -> list[dict[str, Any]]:
    """The Kubernetes documents that run ``plan``: a ConfigMap with the plan file's exact text, then a
    ``kubeflow.org/v1`` PyTorchJob.

    ``plan_name`` is the plan's file name (mounted at ``/ftc/job/<plan_name>``); ``pvc`` the PersistentVolumeClaim
    that holds the plan folder; ``job_name`` defaults to one made from the output folder's name and the plan id.
    ``gpus_per_node`` is the ``nvidia.com/gpu`` limit of each pod, 0 for none (a CPU job); None lets the plan say:
    its workers' whole ``GPU`` resource, none for a CPU image (a ``cpu`` or ``*-cpu`` tag), else one per process.

    Raises :class:`~ftc.errors.UsageError` for a plan a cluster cannot run: no image or one not pinned by digest,
    a local input or the output folder outside the plan folder, weights from the hub, a DVC remote on a local disk.
    """
    image = _image(plan)
    _check_paths(plan)
    nodes, per_node = plan.launch.nodes, plan.launch.processes_per_node
    gpus = gpus_per_pod(plan, gpus_per_node)
    _check_arguments(plan_name, pvc, namespace, gpus, per_node)
    short_id = plan.plan_id.removeprefix("sha256:")[:12]
    job_name = _job_name(plan, job_name, short_id, nodes)
    text = plan.text()
    if len(text.encode()) > _CONFIGMAP_MAX_BYTES:
        raise UsageError(
            f"the plan is {len(text.encode()):,} bytes, more than a ConfigMap holds ({_CONFIGMAP_MAX_BYTES:,}); "
            "folders of many files make plans large: "
            "put such inputs in an object store (s3://, gs://) or a tarball, and recompile"
        )
    labels = {"app.kubernetes.io/managed-by": "ftc", "ftc.dev/plan-id": short_id}
    config_name = f"{job_name}-plan"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_name, namespace, labels),
        "data": {plan_name: text},
    }
    template = _pod_template(image, plan, plan_name, pvc, config_name, labels, gpus)
    worker = copy.deepcopy(template)
    apply_requests(template, plan, master=True)  # the spec's Ray resources that Kubernetes has a meaning for
    apply_requests(worker, plan, master=False)
    # Never: a failed process stops the job (a restarted pod would find checkpoints and need --resume)
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": worker}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(job_name, namespace, labels),
        "spec": {
            "nprocPerNode": str(per_node),  # the CRD types it as a string ("auto", "cpu", "gpu" or a number)
            "pytorchReplicaSpecs": replicas,
        },
    }
    if left_out(plan):  # said in the manifest (and by `ftc compile`)
        job["metadata"]["annotations"] = {LEFT_OUT_ANNOTATION: "; ".join(left_out(plan))}
    return [configmap, job]


def _check_arguments(plan_name: str, pvc: str, namespace: str | None, gpus: int, per_node: int) -> None:
    if gpus < 0 or 0 < gpus < per_node:
        raise UsageError(
            f"gpus_per_node {gpus}: give 0 (CPU) or at least the plan's {per_node} process(es) per node, one GPU each"
        )
    if not _CONFIGMAP_KEY.match(plan_name) or plan_name in (".", ".."):
        raise UsageError(
            f"plan file name {plan_name!r}: it becomes a ConfigMap key, so only letters, digits, '-', '_' and '.'"
        )
    if len(pvc) > 253 or not _DNS_SUBDOMAIN.match(pvc):
        raise UsageError(
            f"--k8s-pvc {pvc!r} is not a valid PersistentVolumeClaim name (lowercase letters, digits, '-' and '.')"
        )
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        raise UsageError(
            f"--k8s-namespace {namespace!r} is not a valid namespace (at most 63 lowercase letters, digits and '-')"
        )


def _job_name(plan: Plan, job_name: str | None, short_id: str, nodes: int) -> str:
    # the operator names a Service and a Pod after each replica (<job>-worker-<i>): a Service name is at most 63
    # characters and must start with a letter (DNS-1035)
    room = 63 - len(f"-worker-{max(nodes - 2, 0)}")
    if job_name is None:
        job_name = _default_name(plan, short_id, room)
    elif len(job_name) > room or not _DNS_LABEL.match(job_name) or not job_name[0].isalpha():
        raise UsageError(
            f"job name {job_name!r}: at most {room} lowercase letters, digits and '-', starting with a letter"
        )
    return job_name


def _pod_template(
    image: str, plan: Plan, plan_name: str, pvc: str, config_name: str, labels: dict[str, str], gpus: int
) -> dict[str, Any]:
    """The pod every replica runs: torchrun over the plan, the claim at JOB_DIR, the plan file from the ConfigMap."""
    plan_path = f"{JOB_DIR}/{plan_name}"
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        # torchrun takes --nnodes, --node-rank, --nproc-per-node, --master-addr and --master-port from PET_NNODES,
        # PET_NODE_RANK, PET_NPROC_PER_NODE, PET_MASTER_ADDR and PET_MASTER_PORT when they are not given
        # (torch/distributed/run.py declares them with action=env; torch/distributed/argparse_util.py's env reads
        # PET_<DEST>). The training operator's PyTorchJob controller (pkg/controller.v1/pytorch: envvar.go,
        # master.go) sets all five in every pod of a job with a Master and no elasticPolicy: nnodes from the replica
        # count, node rank from the replica index (Master 0), nproc from spec.nprocPerNode, and the address and
        # port of the Master's Service. So the command names none of them, and torchrun's default static
        # rendezvous meets at the Master.
        "command": ["python", "-m", "torch.distributed.run", "-m", "ftc.runtime", plan_path],
        "workingDir": JOB_DIR,
        "env": [
            {"name": "FTC_CACHE_DIR", "value": f"{JOB_DIR}/.ftc-cache"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            # the image the pods run, for the checkpoints' lineage (by digest: the kubelet pulls exactly that)
            {"name": IMAGE_ENV, "value": _image_env(image, plan.image.requested)},
        ],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "job", "mountPath": JOB_DIR},
            {"name": "plan", "mountPath": plan_path, "subPath": plan_name, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS},
            "containers": [container],
            "volumes": [
                {"name": "job", "persistentVolumeClaim": {"claimName": pvc}},
                {"name": "plan", "configMap": {"name": config_name}},
                # NCCL and the data loader use shared memory; a container's default /dev/shm is 64 MB
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }


def write_k8s_manifest(
    plan: Plan,
    plan_path: Path,
    *,
    pvc: str,
    namespace: str | None = None,
    gpus_per_node: int | None = None,
) -> Path:
    """Write :func:`k8s_manifest` for the plan at ``plan_path`` as ``<plan stem>.k8s.yaml`` beside it (atomically:
    a temp file in the same folder, then renamed) and return its path."""
    plan_path = Path(plan_path)
    docs = k8s_manifest(plan, plan_name=plan_path.name, pvc=pvc, namespace=namespace, gpus_per_node=gpus_per_node)
    return write_text_atomic(plan_path.with_name(f"{plan_path.stem}.k8s.yaml"), manifest_text(docs))


def manifest_text(docs: list[dict[str, Any]]) -> str:
    """``docs`` as multi-document YAML, keys in the order built, multi-line strings (the plan) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no YAML anchors: every value is written out where it is used
            return True

    def string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, string)
    return yaml.dump_all(
        docs,
        Dumper=Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        explicit_start=True,
        width=120,
    )


def _metadata(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def _image_env(ref: str, requested: str) -> str:
    return json.dumps({"ref": ref, "requested": requested, "pinned": True, "repo_digests": [ref]}, sort_keys=True)


def _image(plan: Plan) -> str:
    image = plan.image
    fix = "compile the spec with a pinned image: `image: REPOSITORY@sha256:<digest>` (or a tag the registry can pin)"
    if image is None:
        raise UsageError(f"the plan names no image, and a cluster runs a container image\n    fix: {fix}")
    if not image.pinned:
        raise UsageError(
            f"image {image.ref} is not pinned by digest: every pod must run the same image\n    fix: {fix}"
        )
    if image.pin_kind == "image-id":
        raise UsageError(
            f"image {image.requested} is pinned by a local image ID, which a cluster cannot pull"
            f"\n    fix: push it to a registry the cluster can reach, then {fix}"
        )
    return image.ref


def _check_paths(plan: Plan) -> None:
    """Every input must be reachable from a pod: inside the plan folder (on the claim) or in a store."""
    for role, item in sorted(plan.inputs.items()):  # the input's kind knows what a pod cannot read
        problem = SOURCES[item.source].cluster_problem(role, item)
        if problem is not None:
            raise UsageError(problem)
    out = plan.output_dir
    if plan.output_store is not None:
        return  # node 0's pod uploads each checkpoint (with the store credentials the cluster gives its pods)
    if is_absolute(out) or is_outside(out):
        raise UsageError(
            f"output folder {out} is not inside the plan folder, so the pods' checkpoints would be lost"
            "\n    fix: set output_dir to a folder inside the plan's folder"
        )


def _default_name(plan: Plan, short_id: str, room: int) -> str:
    """``<output folder name>-<plan id>``, made a DNS-1035 label: lowercase, [a-z0-9-], starting with a letter."""
    base = posixpath.basename(posixpath.normpath(plan.output_dir))
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", base.lower())).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"ftc-{slug}".rstrip("-")
    slug = slug[: room - len(short_id) - 1].rstrip("-")
    return f"{slug}-{short_id}"
