"""The spec's Ray resources in the Kubernetes manifest (`ftc compile --emit k8s`): memory and CPU become the pods'
requests (a pod runs a node's share of the workers; the Master pod also the trainer's), and what has no Kubernetes
meaning (accelerator types, Anyscale's shapes, other Ray custom resources, a fraction of a GPU) is named in the
manifest and by the compile, never dropped silently."""

from __future__ import annotations

import json
import shutil

import yaml

from conftest import REPO

IMAGE = "ghcr.io/acme/ftc-runtime@sha256:" + "ab" * 32
WORKER = {
    "memory": 53_687_091_200,
    "CPU": 1.5,
    "accelerator_type:A10G": 0.001,
    "anyscale/accelerator_shape:4xA10G": 0.001,
}
TRAINER = {"memory": 150_323_855_360}


def crd_errors(job: dict) -> list[str]:
    import jsonschema

    schema = json.loads((REPO / "tests" / "data" / "schemas" / "kubeflow-pytorchjob-v1.json").read_text())
    return sorted(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(job))


def _emit(job, ftc, tmp_path, tiny_model, **spec) -> tuple[str, dict]:
    shutil.copytree(tiny_model, tmp_path / "model", dirs_exist_ok=True)
    path = job(initial_base_model_ckpt_path="model", image=IMAGE, output_dir="runs/out", **spec)
    r = ftc("compile", path, "-o", tmp_path / "plan.json", "--emit", "k8s", "--k8s-pvc", "ftc-jobs")
    assert r.code == 0, r.err
    _, pytorchjob = yaml.safe_load_all((tmp_path / "plan.k8s.yaml").read_text())
    return r.err, pytorchjob


def _container(pytorchjob: dict, kind: str) -> dict:
    return pytorchjob["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"]["containers"][0]


def test_memory_and_cpu_become_each_pods_requests_and_the_rest_is_named(job, ftc, tmp_path, tiny_model):
    err, pytorchjob = _emit(
        job, ftc, tmp_path, tiny_model, num_nodes=2, num_devices=4, worker_resources=WORKER, trainer_resources=TRAINER
    )
    assert crd_errors(pytorchjob) == []
    # 2 workers a pod; the Master pod (rank 0's) also holds the trainer's memory
    master, worker = _container(pytorchjob, "Master"), _container(pytorchjob, "Worker")
    assert master["resources"] == {
        "limits": {"nvidia.com/gpu": 2},
        "requests": {"memory": str(2 * 53_687_091_200 + 150_323_855_360), "cpu": "3"},
    }
    assert worker["resources"]["requests"] == {"memory": str(2 * 53_687_091_200), "cpu": "3"}
    left = pytorchjob["metadata"]["annotations"]["ftc.dev/resources-left-out"]
    assert "worker_resources.accelerator_type:A10G 0.001: no standard Kubernetes label names an accelerator" in left
    assert "worker_resources.anyscale/accelerator_shape:4xA10G 0.001: an Anyscale cluster's own resource" in left
    assert "note: the k8s manifest leaves out worker_resources.accelerator_type:A10G 0.001" in err
    assert "note: the k8s manifest leaves out worker_resources.anyscale/accelerator_shape:4xA10G 0.001" in err
    assert "memory" not in left and "CPU" not in left


def test_fractions_of_a_cpu_are_millicores_and_of_a_gpu_are_left_to_the_gpus_option(job, ftc, tmp_path, tiny_model):
    err, pytorchjob = _emit(job, ftc, tmp_path, tiny_model, worker_resources={"CPU": 0.25, "GPU": 0.5})
    assert _container(pytorchjob, "Master")["resources"] == {
        "limits": {"nvidia.com/gpu": 1},
        "requests": {"cpu": "250m"},
    }
    assert "worker_resources.GPU 0.5: a pod asks for whole GPUs: its GPUs are --k8s-gpus-per-node's" in err
    err, pytorchjob = _emit(job, ftc, tmp_path, tiny_model, worker_resources={"GPU": 2}, trainer_resources={"GPU": 1})
    assert _container(pytorchjob, "Master")["resources"] == {"limits": {"nvidia.com/gpu": 2}}  # a worker's 2 GPUs
    assert "worker_resources.GPU" not in err
    assert "trainer_resources.GPU 1: the trainer runs in the Master pod beside rank 0" in err


def test_a_plan_without_them_has_no_requests_and_no_annotation(job, ftc, tmp_path, tiny_model):
    err, pytorchjob = _emit(job, ftc, tmp_path, tiny_model)
    assert "annotations" not in pytorchjob["metadata"] and "note:" not in err
    assert "requests" not in _container(pytorchjob, "Master")["resources"]
