"""task: preference_tuning with llmforge's preference_tuning_config: DPO's settings in the typed spec and the plan,
the task implied by the config (and the config's defaults by the task), every problem with them named at its place,
and the plans of the other tasks unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftc.errors import ExitCode, PlanInvalid
from ftc.spec import job_schema
from ftc.spec.model import JobSpec, PreferenceConfig, ReferencePass
from ftc.spec.schemas import _object_branch

from support.models import write_jsonl
from support.preference import preference_pairs

DEFAULTS = {
    "beta": 0.1,
    "loss_type": "sigmoid",
    "logprob_processor_scaling_config": {"custom_resources": {}, "concurrency": 1, "batch_size": None},
}


@pytest.fixture
def pairs(tmp_path):
    """Preference pairs as train and valid files, as spec keys."""
    write_jsonl(tmp_path / "pairs-train.jsonl", preference_pairs(16, seed=1))
    write_jsonl(tmp_path / "pairs-valid.jsonl", preference_pairs(4, seed=2))
    return {"train_path": "pairs-train.jsonl", "valid_path": "pairs-valid.jsonl"}


def _compiled(ftc, path, out):
    r = ftc("compile", path, "-o", out)
    assert r.code == 0, r.err
    return json.loads(out.read_text())


def test_preference_tuning_config_alone_makes_a_preference_task_with_its_settings(job, ftc, pairs, tmp_path):
    given = {"beta": 0.01, "logprob_processor_scaling_config": {"custom_resources": {"accelerator_type:A10G": 0.001},
                                                                "concurrency": 4, "batch_size": 2}}  # fmt: skip
    plan = _compiled(ftc, job(preference_tuning_config=given, **pairs), tmp_path / "plan.json")
    assert plan["spec"]["task"] == "preference_tuning"
    assert plan["spec"]["preference_tuning_config"] == {**given, "loss_type": "sigmoid"}
    assert plan["inputs"]["train"]["records"] == 16 and plan["inputs"]["valid"]["records"] == 4
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "task      preference_tuning: DPO on pairs: the final answers of each pair, chosen and rejected" in shown
    assert (
        "dpo       beta 0.01, loss sigmoid; reference log-probs: batch 2, concurrency 4, Ray resources "
        "accelerator_type:A10G 0.001" in shown
    )
    assert "16 pairs" in shown


def test_task_preference_tuning_alone_takes_the_configs_defaults_into_the_plan(job, ftc, pairs, tmp_path):
    plan = _compiled(ftc, job(task="preference_tuning", **pairs), tmp_path / "plan.json")
    assert plan["spec"]["preference_tuning_config"] == DEFAULTS
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "dpo       beta 0.1, loss sigmoid; reference log-probs: batch 4 (eval_batch_size_per_device), " in shown
    assert "concurrency 1\n" in shown  # no Ray resources asked for


def test_the_ipo_loss_is_taken(job, ftc, pairs, tmp_path):
    plan = _compiled(ftc, job(preference_tuning_config={"loss_type": "ipo"}, **pairs), tmp_path / "plan.json")
    assert plan["spec"]["preference_tuning_config"]["loss_type"] == "ipo"
    assert "loss ipo;" in ftc("plan", "show", tmp_path / "plan.json").out


def test_a_spec_of_another_task_keeps_its_plan_without_the_key(job, ftc, tmp_path):
    plan = _compiled(ftc, job(), tmp_path / "plan.json")
    assert "preference_tuning_config" not in plan["spec"] and "classifier_config" not in plan["spec"]
    assert "dpo " not in ftc("plan", "show", tmp_path / "plan.json").out


@pytest.mark.parametrize(
    "config, where, message",
    [
        ({"beta": 0}, "$.preference_tuning_config.beta", "must be > 0"),
        ({"beta": -0.1}, "$.preference_tuning_config.beta", "must be > 0"),
        ({"beta": float("nan")}, "$.preference_tuning_config.beta", "expected number, got a non-finite number"),
        ({"beta": float("inf")}, "$.preference_tuning_config.beta", "expected number, got a non-finite number"),
        ({"beta": "0.1"}, "$.preference_tuning_config.beta", "expected number, got string"),
        ({"loss_type": "hinge"}, "$.preference_tuning_config.loss_type", "must be one of: sigmoid, ipo"),
        ({"betta": 0.1}, "$.preference_tuning_config.betta", "unknown key; did you mean `beta`?"),
        ({"logprob_processor_scaling_config": {"concurrency": 0}},
         "$.preference_tuning_config.logprob_processor_scaling_config.concurrency", "must be >= 1"),
        ({"logprob_processor_scaling_config": {"batch_size": 0}},
         "$.preference_tuning_config.logprob_processor_scaling_config.batch_size", "must be >= 1"),
        ({"logprob_processor_scaling_config": {"custom_resources": {"GPU": -1}}},
         "$.preference_tuning_config.logprob_processor_scaling_config.custom_resources.GPU", "must be >= 0"),
        ({"logprob_processor_scaling_config": {"num_gpus": 1}},
         "$.preference_tuning_config.logprob_processor_scaling_config.num_gpus", "unknown key"),
    ],
)  # fmt: skip
def test_a_preference_config_ftc_cannot_train_is_a_spec_problem_at_its_place(job, ftc, pairs, config, where, message):
    r = ftc("compile", job(preference_tuning_config=config, **pairs))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert f"{where}: {message}" in r.err, r.err


def test_beta_refused_in_yaml_spelling_names_its_line(job, ftc, pairs):
    spec = job(**pairs).read_text() + "preference_tuning_config:\n  beta: .nan\n"
    r = ftc("compile", job(text=spec))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.preference_tuning_config.beta: expected number, got a non-finite number" in r.err
    line = spec.splitlines().index("  beta: .nan") + 1
    assert f"job.yaml:{line}: $.preference_tuning_config.beta" in r.err, r.err


def test_sample_packing_is_refused_for_pairs(job, ftc, pairs):
    r = ftc("compile", job(preference_tuning_config={}, sample_packing=True, **pairs))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert (
        "$.sample_packing: task preference_tuning batches each pair's two answers together, padded; packing does not "
        "apply to pairs" in r.err
    )
    assert "fix: remove sample_packing (or set it to false)" in r.err


def test_two_configs_of_two_tasks_and_no_task_are_named(job, ftc, pairs):
    r = ftc("compile", job(classifier_config={"label_tokens": ["a"]}, preference_tuning_config={}, **pairs))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert (
        "$.preference_tuning_config: preference_tuning_config is for llmforge's preference_tuning task, and "
        "classifier_config for its classification task: a spec trains one task" in r.err
    )
    assert "fix: keep the config of the task to train, and remove preference_tuning_config" in r.err


def test_a_plan_whose_preference_task_lost_its_config_is_refused(job, ftc, pairs, tmp_path):
    from ftc.spec.plan import read_plan
    from ftc.spec.plan_format import plan_text, seal_plan

    plan = _compiled(ftc, job(task="preference_tuning", **pairs), tmp_path / "plan.json")
    del plan["spec"]["preference_tuning_config"]
    (tmp_path / "edited.json").write_text(plan_text(seal_plan(plan)))
    with pytest.raises(PlanInvalid, match="task preference_tuning has no preference_tuning_config"):
        read_plan(tmp_path / "edited.json")


def test_a_plan_of_another_task_that_carries_a_preference_config_is_refused(job, ftc, pairs, tmp_path):
    from ftc.spec.plan import read_plan
    from ftc.spec.plan_format import plan_text, seal_plan

    plan = _compiled(ftc, job(), tmp_path / "plan.json")
    plan["spec"]["preference_tuning_config"] = DEFAULTS
    (tmp_path / "edited.json").write_text(plan_text(seal_plan(plan)))
    with pytest.raises(PlanInvalid, match="preference_tuning_config is for llmforge's preference_tuning task, and "):
        read_plan(tmp_path / "edited.json")


def test_the_typed_config_reads_llmforges_key_as_reference_and_writes_it_back():
    reference = {"custom_resources": {"GPU": 1}, "concurrency": 2, "batch_size": 8}
    spec = {"beta": 0.05, "loss_type": "ipo", "logprob_processor_scaling_config": reference}
    typed = JobSpec.from_dict({**_a_normalized_spec(), "task": "preference_tuning", "preference_tuning_config": spec})
    assert typed.preference_tuning_config == PreferenceConfig(
        beta=0.05, loss_type="ipo", reference=ReferencePass(concurrency=2, batch_size=8, custom_resources={"GPU": 1})
    )
    assert typed.to_dict()["preference_tuning_config"] == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.preference_tuning_config.beta = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "cls, path",
    [
        (PreferenceConfig, ("preference_tuning_config",)),
        (ReferencePass, ("preference_tuning_config", "logprob_processor_scaling_config")),
    ],
)
def test_the_typed_classes_match_the_schema_key_for_key(cls, path):
    root = job_schema()
    schema = root
    for key in path:
        schema = _object_branch(schema, root)["properties"][key]
    keys = {f.metadata.get("key", f.name) for f in dataclasses.fields(cls)}
    assert keys == set(_object_branch(schema, root)["properties"])


def _a_normalized_spec() -> dict:
    from ftc.spec.schemas import apply_defaults

    return apply_defaults({"model_id": "m", "train_path": "t.jsonl"})
