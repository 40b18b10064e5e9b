"""llmforge's job spec keys: each taken with its meaning (an alias normalized into ftc's setting, a task, a key with
no effect in ftc named as such), or a clear problem where ftc does not do what the key asks."""

from __future__ import annotations

import json

import pytest

from ftc.errors import ExitCode


def _plan(ftc, path, out):
    r = ftc("compile", path, "-o", out)
    assert r.code == 0, r.err
    return json.loads(out.read_text()), r


def test_a_spec_without_task_trains_instruction_tuning_and_plan_show_says_llmforges_default_differs(job, ftc, tmp_path):
    plan, _ = _plan(ftc, job(), tmp_path / "plan.json")
    assert plan["spec"]["task"] == "instruction_tuning"
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "task      instruction_tuning: the loss on the assistant's turns (llmforge's default was causal_lm)" in shown


def test_task_causal_lm_is_carried_into_the_plan(job, ftc, tmp_path):
    plan, _ = _plan(ftc, job(task="causal_lm"), tmp_path / "plan.json")
    assert plan["spec"]["task"] == "causal_lm"
    assert "task      causal_lm: the loss on every token" in ftc("plan", "show", tmp_path / "plan.json").out


@pytest.mark.parametrize(
    "keys, where, message",
    [
        ({"task": "classification"}, "$.task", "llmforge's classification task (classifier_config) is not in ftc yet"),
        ({"classifier_config": {"label_tokens": ["[[1]]", "[[2]]"]}}, "$.classifier_config",
         "llmforge's classification task (classifier_config) is not in ftc yet"),
        ({"preference_tuning_config": {"beta": 0.01}}, "$.preference_tuning_config",
         "llmforge's preference tuning task (preference_tuning_config, DPO) is not in ftc yet"),
        ({"task": "preference_tuning", "preference_tuning_config": {"beta": 0.01}}, "$.task",
         "llmforge's preference tuning task (preference_tuning_config, DPO) is not in ftc yet"),
        ({"task": "vision_language"}, "$.task", "vision-language tuning (llmforge's vision_language task) is not "
         "supported"),
        ({"vision_language_config": {}}, "$.vision_language_config", "vision-language tuning"),
        ({"task": "instruction_tuning", "classifier_config": {"label_tokens": ["a"]}}, "$.classifier_config",
         "classifier_config is for llmforge's classification task, and the spec's task is instruction_tuning"),
    ],
)  # fmt: skip
def test_llmforges_tasks_ftc_does_not_train_are_named_not_unknown(job, ftc, keys, where, message):
    r = ftc("compile", job(**keys))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert f"{where}: {message}" in r.err
    assert "fix: " in r.err
    assert "unknown key" not in r.err and "does not take" not in r.err


@pytest.mark.parametrize("in_adapter", [None, []], ids=["peft-null", "empty"])
def test_modules_to_save_empty_in_the_spec_agrees_with_an_adapter_that_saves_none(
    job, ftc, tiny_adapter, tmp_path, in_adapter
):
    """llmforge's LoRA configs write modules_to_save: []; peft writes null into adapter_config.json: the same."""
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["modules_to_save"] = in_adapter
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "modules_to_save": []}
    r = ftc("compile", job(initial_adapter_model_ckpt_path=str(adapter), lora_config=lora), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    r = ftc(
        "compile",
        job(initial_adapter_model_ckpt_path=str(adapter), lora_config={**lora, "modules_to_save": ["lm_head"]}),
    )
    assert r.code == ExitCode.SPEC_INVALID
    assert f'$.lora_config.modules_to_save: the spec says modules_to_save = ["lm_head"] but the adapter has ' in r.err
