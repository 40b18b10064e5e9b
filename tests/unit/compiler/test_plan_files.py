"""Plan files: ``read_or_compile_plan`` tells a compiled plan from a spec (written as YAML or as JSON), and
``write_plan_for_k8s`` writes nothing for a plan a cluster cannot run, else the plan and then its manifest."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ftc.compiler import compile_spec, read_or_compile_plan, write_plan, write_plan_for_k8s
from ftc.errors import PlanInvalid, UsageError

IMAGE = "ghcr.io/acme/ftc-runtime@sha256:" + "ab" * 32


def test_a_plan_is_read_and_a_spec_is_compiled_in_memory(job, tmp_path):
    spec = job()
    plan = compile_spec(spec, plan_dir=tmp_path).plan
    written = write_plan(plan, tmp_path / "plan.json")
    assert read_or_compile_plan(written).plan_id == plan.plan_id
    assert read_or_compile_plan(spec).plan_id == plan.plan_id
    as_json = tmp_path / "job.json"  # a spec written as JSON has no plan_id: it is compiled, and nothing is written
    as_json.write_text(json.dumps(yaml.safe_load(spec.read_text())))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert read_or_compile_plan(as_json).plan_id == plan.plan_id
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_json_file_that_is_not_json_is_reported_as_a_plan(tmp_path):
    broken = tmp_path / "plan.json"
    broken.write_text("{not json")
    with pytest.raises(PlanInvalid, match="plan.json"):
        read_or_compile_plan(broken)


def test_nothing_is_written_for_a_plan_a_cluster_cannot_run(job, tmp_path):
    plan = compile_spec(job(image=IMAGE), plan_dir=tmp_path).plan  # its base weights: an absolute path, off the claim
    told = []
    with pytest.raises(UsageError, match="base_model"):
        write_plan_for_k8s(plan, tmp_path / "plan.json", pvc="ftc-jobs", plan_written=told.append)
    assert told == [] and not (tmp_path / "plan.json").exists() and not (tmp_path / "plan.k8s.yaml").exists()


def test_the_plan_is_written_then_its_manifest_beside_it(job, tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    spec = job(initial_base_model_ckpt_path="model", image=IMAGE, output_dir="runs/out")
    plan = compile_spec(spec, plan_dir=tmp_path).plan
    path, manifest_path = tmp_path / "plan.json", tmp_path / "plan.k8s.yaml"
    seen = []
    manifest = write_plan_for_k8s(
        plan,
        path,
        pvc="ftc-jobs",
        namespace="ml",
        plan_written=lambda written: seen.append((written, written.exists(), manifest_path.exists())),
    )
    assert seen == [(path, True, False)]  # told once the plan is there, before the manifest is
    assert manifest == manifest_path and path.read_text() == plan.text()
    configmap, pytorchjob = yaml.safe_load_all(manifest.read_text())
    assert configmap["data"]["plan.json"] == path.read_text() and pytorchjob["metadata"]["namespace"] == "ml"
