"""How many GPUs each pod of `ftc compile --emit k8s` asks for: none for a plan in a CPU image or whose workers take
no GPU (so the job schedules on a cluster of CPU nodes), a worker's whole GPUs per process, else one per process;
`--k8s-gpus-per-node N` decides where the plan cannot tell. Every manifest still validates against the training
operator's CRD schema."""

from __future__ import annotations

import json
import shutil

import yaml

from conftest import REPO

DIGEST = "@sha256:" + "ab" * 32
CPU_IMAGE = "ghcr.io/acme/ftc-runtime:0.1.0-cpu" + DIGEST
GPU_IMAGE = "ghcr.io/acme/ftc-runtime:0.1.0-gpu" + DIGEST
BY_DIGEST = "ghcr.io/acme/ftc-runtime" + DIGEST


def crd_errors(job: dict) -> list[str]:
    import jsonschema

    schema = json.loads((REPO / "tests" / "data" / "schemas" / "kubeflow-pytorchjob-v1.json").read_text())
    return sorted(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(job))


def _pods(job, ftc, tmp_path, tiny_model, *options, **spec) -> list[dict]:
    """Compile with --emit k8s; each replica's container, the PyTorchJob checked against the CRD schema."""
    shutil.copytree(tiny_model, tmp_path / "model", dirs_exist_ok=True)
    spec = {"initial_base_model_ckpt_path": "model", "output_dir": "runs/out", "num_nodes": 2, "num_devices": 4, **spec}
    r = ftc("compile", job(**spec), "-o", tmp_path / "plan.json", "--emit", "k8s", "--k8s-pvc", "ftc-jobs", *options)
    assert r.code == 0, r.err
    _, pytorchjob = yaml.safe_load_all((tmp_path / "plan.k8s.yaml").read_text())
    assert crd_errors(pytorchjob) == []
    replicas = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert list(replicas) == ["Master", "Worker"]
    return [r["template"]["spec"]["containers"][0] for r in replicas.values()]


def _gpus(container: dict) -> int | None:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def test_a_plan_in_the_cpu_image_asks_for_no_gpu(job, ftc, tmp_path, tiny_model):
    for container in _pods(job, ftc, tmp_path, tiny_model, image=CPU_IMAGE):
        assert "resources" not in container
        assert "nvidia.com/gpu" not in json.dumps(container)


def test_a_cpu_plans_pods_request_its_workers_cpu_and_memory_and_no_gpu(job, ftc, tmp_path, tiny_model):
    resources = {"CPU": 2, "memory": 4_000_000_000, "accelerator_type:A10G": 0.001}
    for spec in ({"image": CPU_IMAGE}, {"image": BY_DIGEST, "worker_resources": {**resources, "GPU": 0}}):
        pods = _pods(job, ftc, tmp_path, tiny_model, **{"worker_resources": resources, **spec})  # CRD-valid
        # 2 processes a pod (4 devices on 2 nodes): each pod requests two workers' CPU and memory, and no GPU
        assert [c["resources"] for c in pods] == [{"requests": {"memory": "8000000000", "cpu": "4"}}] * 2, spec
        assert "nvidia.com/gpu" not in json.dumps(pods)
        job_doc = list(yaml.safe_load_all((tmp_path / "plan.k8s.yaml").read_text()))[1]
        left = job_doc["metadata"]["annotations"]["ftc.dev/resources-left-out"]
        assert "worker_resources.accelerator_type:A10G 0.001: no standard Kubernetes label names" in left
        pod_specs = [r["template"]["spec"] for r in job_doc["spec"]["pytorchReplicaSpecs"].values()]
        assert not any("nodeSelector" in s or "affinity" in s for s in pod_specs)  # noted, never guessed at


def test_a_plan_in_another_image_keeps_one_gpu_per_process(job, ftc, tmp_path, tiny_model):
    for image in (GPU_IMAGE, BY_DIGEST):  # a digest alone says nothing of the image: one GPU per process
        assert [_gpus(c) for c in _pods(job, ftc, tmp_path, tiny_model, image=image)] == [2, 2]


def test_a_workers_whole_gpus_are_the_pods(job, ftc, tmp_path, tiny_model):
    pods = _pods(job, ftc, tmp_path, tiny_model, image=GPU_IMAGE, worker_resources={"GPU": 0, "CPU": 2})
    assert [c["resources"] for c in pods] == [{"requests": {"cpu": "4"}}] * 2  # GPU 0, as Ray reads it: none
    assert [_gpus(c) for c in _pods(job, ftc, tmp_path, tiny_model, image=BY_DIGEST, worker_resources={"GPU": 2})] == [
        4,
        4,
    ]


def test_the_option_decides_over_the_plan(job, ftc, tmp_path, tiny_model):
    pods = _pods(job, ftc, tmp_path, tiny_model, "--k8s-gpus-per-node", "4", image=CPU_IMAGE)
    assert [_gpus(c) for c in pods] == [4, 4]
    pods = _pods(job, ftc, tmp_path, tiny_model, "--k8s-gpus-per-node", "0", image=GPU_IMAGE)
    assert [_gpus(c) for c in pods] == [None, None]


def test_fewer_gpus_than_processes_are_refused(job, ftc, tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    spec = job(initial_base_model_ckpt_path="model", image=CPU_IMAGE, output_dir="runs/out", num_devices=2)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json", "--emit", "k8s", "--k8s-pvc", "x", "--k8s-gpus-per-node", 1)
    assert r.code == 2
    assert "gpus_per_node 1: give 0 (CPU) or at least the plan's 2 process(es) per node, one GPU each" in r.err
    assert not (tmp_path / "plan.json").exists()
