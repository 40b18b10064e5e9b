"""Kubernetes manifests for a plan: a ConfigMap with the plan file and a Kubeflow PyTorchJob, checked against the
training operator's own CRD schema (tests/data/schemas/kubeflow-pytorchjob-v1.json)."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from ftc.compiler import k8s_manifest, write_k8s_manifest
from ftc.errors import UsageError
from ftc.spec.plan import Plan

from conftest import REPO, read_json

IMAGE = "ghcr.io/acme/ftc-runtime@sha256:" + "ab" * 32


@functools.lru_cache(maxsize=1)
def crd_validator():
    import jsonschema

    schema = json.loads((REPO / "tests" / "data" / "schemas" / "kubeflow-pytorchjob-v1.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    # a structural schema is JSON Schema; the x-kubernetes-* keys are unknown keywords, which validators ignore
    return jsonschema.Draft7Validator(schema)


def crd_errors(job: dict) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator().iter_errors(job))


@pytest.fixture
def compiled(job, ftc, tmp_path, tiny_model):
    """Compile a spec whose inputs all live inside the plan folder: ``compiled(**spec)`` -> (plan path, plan)."""
    shutil.copytree(tiny_model, tmp_path / "model")

    def make(name: str = "plan.json", **overrides) -> tuple[Path, dict]:
        spec = {"initial_base_model_ckpt_path": "model", "image": IMAGE, "output_dir": "runs/out", **overrides}
        path = tmp_path / name
        r = ftc("compile", job(name=f"{Path(name).stem}.yaml", **spec), "-o", path)
        assert r.code == 0, r.err
        return path, read_json(path)

    return make


def docs_of(plan: dict, **kwargs) -> tuple[dict, dict]:
    configmap, pytorchjob = k8s_manifest(
        Plan.from_dict(plan),
        plan_name=kwargs.pop("plan_name", "plan.json"),
        pvc=kwargs.pop("pvc", "ftc-jobs"),
        **kwargs,
    )
    return configmap, pytorchjob


def test_the_pytorchjob_is_valid_against_the_operator_crd(compiled):
    _, plan = compiled(num_nodes=2, num_devices=4)
    configmap, job = docs_of(plan, namespace="ml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert (configmap["apiVersion"], configmap["kind"]) == ("v1", "ConfigMap")
    assert crd_errors(job) == []


def test_the_crd_schema_rejects_a_wrongly_typed_job(compiled):
    _, plan = compiled(num_nodes=2, num_devices=4)
    _, job = docs_of(plan)
    bad = copy.deepcopy(job)
    bad["spec"]["nprocPerNode"] = 2  # the CRD types it as a string
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "1"  # an int32
    del bad["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]  # required
    errors = crd_errors(bad)
    assert any(e.startswith("spec.nprocPerNode: 2 is not of type 'string'") for e in errors), errors
    assert any(
        e.startswith("spec.pytorchReplicaSpecs.Worker.replicas: '1' is not of type 'integer'") for e in errors
    ), errors
    assert any(
        e.startswith("spec.pytorchReplicaSpecs.Master.template.spec.containers.0: 'name' is a required property")
        for e in errors
    ), errors
    assert len(errors) == 3


def test_two_nodes_of_two_processes(compiled):
    _, plan = compiled(num_nodes=2, num_devices=4)
    configmap, job = docs_of(plan)
    spec = job["spec"]
    assert spec["nprocPerNode"] == "2"
    replicas = spec["pytorchReplicaSpecs"]
    assert {kind: r["replicas"] for kind, r in replicas.items()} == {"Master": 1, "Worker": 1}
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    pod = replicas["Master"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "torch.distributed.run", "-m", "ftc.runtime", "/ftc/job/plan.json"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FTC_CACHE_DIR"] == "/ftc/job/.ftc-cache" and env["HF_HUB_OFFLINE"] == "1"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/ftc/job/plan.json"]["subPath"] == "plan.json"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/ftc/job"]["name"]]["persistentVolumeClaim"] == {"claimName": "ftc-jobs"}
    assert volumes[mounts["/ftc/job/plan.json"]["name"]]["configMap"] == {"name": configmap["metadata"]["name"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"] == {"medium": "Memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    plan_id = plan["plan_id"].removeprefix("sha256:")[:12]
    for meta in (job["metadata"], configmap["metadata"], replicas["Master"]["template"]["metadata"]):
        assert meta["labels"] == {"app.kubernetes.io/managed-by": "ftc", "ftc.dev/plan-id": plan_id}
    assert job["metadata"]["name"] == f"out-{plan_id}"
    assert "namespace" not in job["metadata"]


def test_one_node_has_no_workers_and_cpu_asks_for_no_gpu(compiled):
    _, plan = compiled(num_devices=2)
    _, job = docs_of(plan, gpus_per_node=0, namespace="ml", job_name="tiny-run")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert "resources" not in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert job["metadata"]["name"] == "tiny-run" and job["metadata"]["namespace"] == "ml"
    assert crd_errors(job) == []


def test_job_names_are_dns_labels(compiled):
    _, plan = compiled(num_nodes=2, num_devices=2, output_dir="Runs/My_Run.2024 (final)" + "x" * 80)
    _, job = docs_of(plan)
    name = job["metadata"]["name"]
    assert len(name) + len("-worker-0") <= 63
    assert name[0].isalpha() and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert name.startswith("my-run-2024-final-xxx")
    with pytest.raises(UsageError, match="job name 'Bad_Name'"):
        docs_of(plan, job_name="Bad_Name")
    with pytest.raises(UsageError, match="--k8s-pvc"):
        docs_of(plan, pvc="Not A Claim")


def test_the_configmap_holds_the_plan_file_byte_for_byte_and_output_is_deterministic(compiled):
    path, plan = compiled(num_nodes=2, num_devices=4)
    manifest = write_k8s_manifest(Plan.from_dict(plan), path, pvc="ftc-jobs", namespace="ml")
    assert manifest == path.with_name("plan.k8s.yaml")
    first = manifest.read_bytes()
    configmap, job = yaml.safe_load_all(first)
    assert configmap["data"]["plan.json"].encode("utf-8") == path.read_bytes()
    assert crd_errors(job) == []
    assert (
        write_k8s_manifest(Plan.from_dict(read_json(path)), path, pvc="ftc-jobs", namespace="ml").read_bytes() == first
    )
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".plan.k8s.yaml")] == []  # no temp file left
    # the same spec compiled again gives the same plan, hence the same manifest
    path2, plan2 = compiled(name="again.json", num_nodes=2, num_devices=4)
    assert write_k8s_manifest(
        Plan.from_dict(plan2), path2, pvc="ftc-jobs", namespace="ml"
    ).read_bytes() == first.replace(b"plan.json", b"again.json")


def test_a_plan_without_a_pinned_image_is_refused(compiled):
    _, plan = compiled(image=None)
    assert plan["image"] is None
    with pytest.raises(UsageError, match="names no image") as no_image:
        docs_of(plan)
    assert "compile the spec with a pinned image" in str(no_image.value)
    unpinned = {
        **plan,
        "image": {
            "ref": "ghcr.io/acme/ftc-runtime:latest",
            "requested": "ghcr.io/acme/ftc-runtime:latest",
            "pinned": False,
        },
    }
    with pytest.raises(
        UsageError, match=r"image ghcr.io/acme/ftc-runtime:latest is not pinned by digest"
    ) as not_pinned:
        docs_of(unpinned)
    assert "compile the spec with a pinned image" in str(not_pinned.value)
    local = {
        **plan,
        "image": {
            "ref": "sha256:" + "cd" * 32,
            "requested": "ftc-runtime:dev",
            "pinned": True,
            "pin_kind": "image-id",
            "digest": "sha256:" + "cd" * 32,
        },
    }
    with pytest.raises(UsageError, match="ftc-runtime:dev is pinned by a local image ID"):
        docs_of(local)


def test_inputs_the_cluster_cannot_reach_are_refused(compiled, tiny_model):
    _, plan = compiled(initial_base_model_ckpt_path=str(tiny_model))  # an absolute path
    with pytest.raises(UsageError, match=r"base_model: .* is an absolute path") as absolute:
        docs_of(plan)
    assert "use a path inside the plan folder" in str(absolute.value) and "s3://, gs://, dvc" in str(absolute.value)
    outside = copy.deepcopy(plan)
    outside["inputs"]["base_model"]["uri"] = "../model"
    with pytest.raises(UsageError, match=r"base_model: \.\./model is outside the plan folder"):
        docs_of(outside)
    hub = copy.deepcopy(plan)
    hub["inputs"]["base_model"] = {"source": "hub", "uri": "hf://meta-llama/Meta-Llama-3-8B", "pinned": False}
    with pytest.raises(UsageError, match="base_model: hf://meta-llama/Meta-Llama-3-8B is not pinned"):
        docs_of(hub)
    output = copy.deepcopy(hub)
    output["inputs"]["base_model"]["uri"] = "model"
    output["inputs"]["base_model"]["source"] = "local"
    output["output"]["dir"] = "../elsewhere"
    with pytest.raises(UsageError, match=r"output folder \.\./elsewhere is not inside the plan folder"):
        docs_of(output)
    output["output"]["dir"] = "s3://bucket/runs/x/"  # a store prefix: node 0's pod uploads, nothing is lost
    job, _ = docs_of(output)
    assert job["metadata"]["name"].startswith("x-")


def test_compile_emits_the_manifest_beside_the_plan(job, ftc, tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    spec = job(initial_base_model_ckpt_path="model", image=IMAGE, output_dir="runs/out", num_nodes=2, num_devices=2)
    r = ftc(
        "compile",
        spec,
        "-o",
        tmp_path / "plan.json",
        "--emit",
        "k8s",
        "--k8s-pvc",
        "ftc-jobs",
        "--k8s-namespace",
        "ml",
        "--k8s-gpus-per-node",
        "0",
    )
    assert r.code == 0, r.err
    manifest = tmp_path / "plan.k8s.yaml"
    assert f"wrote {manifest}: `kubectl apply -f {manifest}`" in r.err
    configmap, pytorchjob = yaml.safe_load_all(manifest.read_text())
    assert configmap["data"]["plan.json"] == (tmp_path / "plan.json").read_text()
    assert pytorchjob["metadata"]["namespace"] == "ml" and crd_errors(pytorchjob) == []
    pod = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "resources" not in pod  # --k8s-gpus-per-node 0: a CPU job
    image = json.loads(next(e["value"] for e in pod["env"] if e["name"] == "FTC_CONTAINER_IMAGE"))
    assert image == {"ref": IMAGE, "requested": IMAGE, "pinned": True, "repo_digests": [IMAGE]}


def test_compile_refuses_to_emit_for_a_plan_a_cluster_cannot_run(job, ftc, tmp_path):
    r = ftc("compile", job(image=IMAGE), "-o", tmp_path / "plan.json", "--emit", "k8s")
    assert r.code == 2 and "give -o PLAN (a file) and --k8s-pvc NAME" in r.err
    r = ftc("compile", job(image=IMAGE), "-o", tmp_path / "plan.json", "--k8s-pvc", "x")
    assert r.code == 2 and "--k8s-pvc, --k8s-namespace and --k8s-gpus-per-node go with --emit k8s" in r.err
    # the base weights are outside the plan's folder (the job fixture's tiny model): not on the claim
    r = ftc("compile", job(image=IMAGE), "-o", tmp_path / "plan.json", "--emit", "k8s", "--k8s-pvc", "x")
    assert r.code == 2 and "base_model" in r.err
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "plan.k8s.yaml").exists()
