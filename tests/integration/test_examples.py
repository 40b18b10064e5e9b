"""Every shipped example compiles, and the seed guide's example uses the guide's keys as they are."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, read_json

EXAMPLES = sorted(p for p in (REPO / "examples").glob("*/job.yaml"))
PREPARED = {"smollm2-arithmetic": "smollm2_example"}  # examples whose weights prepare.py makes (a fixture each)


def test_there_are_examples():
    assert {p.parent.name for p in EXAMPLES} >= {"quickstart", "seed-continue-from-checkpoint"}


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_compiles(spec, ftc, tmp_path, request):
    if spec.parent.name in PREPARED:
        spec = request.getfixturevalue(PREPARED[spec.parent.name]) / "job.yaml"
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "plan.json")
    assert all(item["pinned"] for item in plan["inputs"].values())


def test_seed_example_uses_the_guides_keys():
    spec = yaml.safe_load((REPO / "examples" / "seed-continue-from-checkpoint" / "job.yaml").read_text())
    assert {
        "model_id",
        "initial_base_model_ckpt_path",
        "initial_adapter_model_ckpt_path",
        "train_path",
        "valid_path",
    } <= set(spec)
    assert set(spec["generation_config"]["prompt_format"]) <= {
        "system",
        "user",
        "assistant",
        "trailing_assistant",
        "bos",
        "system_in_user",
        "default_system_message",
    }


def test_seed_example_continues_its_adapter(ftc, tmp_path):
    ftc("compile", REPO / "examples" / "seed-continue-from-checkpoint" / "job.yaml", "-o", tmp_path / "plan.json")
    plan = read_json(tmp_path / "plan.json")
    assert plan["mode"] == "lora-continue"
    assert plan["spec"]["lora_config"]["r"] == 8


def test_seed_example_records_exact_match_at_every_evaluation(ftc, tmp_path):
    plan = tmp_path / "plan.json"
    assert ftc("compile", REPO / "examples" / "seed-continue-from-checkpoint" / "job.yaml", "-o", plan).code == 0
    document = read_json(plan)
    document["output"]["dir"] = str(tmp_path / "out")  # not the example's runs/ folder
    from ftc.spec.plan_format import plan_text, seal_plan

    plan.write_text(plan_text(seal_plan(document)))
    r = ftc("run", plan)
    assert r.code == 0, r.err
    evals = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["type"] == "eval"]
    assert [e["epoch"] for e in evals] == [0, 1, 2, 3]
    assert all(0.0 <= e["exact_match"] <= 1.0 for e in evals)
    assert read_json(tmp_path / "out" / "summary.json")["exact_match"] == evals[-1]["exact_match"]
