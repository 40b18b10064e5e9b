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
        ({"task": "vision_language"}, "$.task", "vision-language tuning (llmforge's vision_language task) is not "
         "supported"),
        ({"vision_language_config": {}}, "$.vision_language_config", "vision-language tuning"),
        ({"task": "instruction_tuning", "classifier_config": {"label_tokens": ["a"]}}, "$.classifier_config",
         "classifier_config is for llmforge's classification task, and the spec's task is instruction_tuning"),
        ({"task": "causal_lm", "preference_tuning_config": {"beta": 0.01}}, "$.preference_tuning_config",
         "preference_tuning_config is for llmforge's preference_tuning task, and the spec's task is causal_lm"),
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
    assert '$.lora_config.modules_to_save: the spec says modules_to_save = ["lm_head"] but the adapter has ' in r.err


@pytest.mark.parametrize(
    "keys, setting, value",
    [
        ({"gradient_checkpointing": True}, "activation_checkpointing", True),
        ({"no_gradient_checkpoint": False}, "activation_checkpointing", True),
        ({"no_gradient_checkpoint": True, "activation_checkpointing": False}, "activation_checkpointing", False),
        ({"flash_attention_2": True}, "attn_implementation", "auto"),
        ({"flash_attention_2": False}, "attn_implementation", "sdpa"),
        ({"checkpoint_every_n_epochs": 2, "num_epochs": 4}, "checkpoint_and_evaluation_frequency",
         {"unit": "epochs", "frequency": 2}),
        ({"max_num_checkpoints": 2, "num_epochs": 5}, "checkpoint_and_evaluation_frequency",
         {"unit": "epochs", "frequency": 3}),
        ({"liger_kernel": {"enabled": True}}, "kernels", "liger"),
        ({"liger_kernel": {"enabled": False, "kwargs": {"rope": False}}}, "kernels", "torch"),
    ],
)  # fmt: skip
def test_an_llmforge_alias_is_ftcs_setting_in_one_place_and_the_plan_records_it(
    job, ftc, tmp_path, keys, setting, value
):
    plan, _ = _plan(ftc, job(**keys), tmp_path / "plan.json")
    assert plan["spec"][setting] == value
    llmforge = [key for key in keys if key != setting and key != "num_epochs"]
    assert not set(llmforge) & set(plan["spec"])  # one setting, one place
    assert plan["llmforge"] == {key: {"given": keys[key], "as": setting} for key in llmforge}
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert f"llmforge  taken as ftc's settings: {llmforge[0]} -> {setting}" in shown


@pytest.mark.parametrize(
    "keys, where, message",
    [
        ({"gradient_checkpointing": True, "no_gradient_checkpoint": True}, "$.no_gradient_checkpoint",
         "no_gradient_checkpoint and gradient_checkpointing disagree: both say activation_checkpointing "
         "(no_gradient_checkpoint means false, gradient_checkpointing true)"),
        ({"activation_checkpointing": False, "gradient_checkpointing": True}, "$.gradient_checkpointing",
         "gradient_checkpointing and activation_checkpointing disagree"),
        ({"attn_implementation": "eager", "flash_attention_2": True}, "$.flash_attention_2",
         "flash_attention_2 and attn_implementation disagree: both say attn_implementation (flash_attention_2 means "
         "auto, attn_implementation eager)"),
        ({"checkpoint_every_n_epochs": 1, "checkpoint_and_evaluation_frequency": {"unit": "steps", "frequency": 5}},
         "$.checkpoint_every_n_epochs", "(checkpoint_every_n_epochs means every 1 epochs, "
         "checkpoint_and_evaluation_frequency every 5 steps)"),
        ({"kernels": "torch", "liger_kernel": {"enabled": True}}, "$.liger_kernel",
         "liger_kernel and kernels disagree"),
        ({"liger_kernel": {"enabled": True, "kwargs": {"rope": False, "swiglu": False}}}, "$.liger_kernel.kwargs.rope",
         "ftc applies Liger's rms_norm, rope, swiglu kernels together; it cannot leave out rope, swiglu"),
    ],
)  # fmt: skip
def test_llmforge_keys_that_disagree_are_a_problem_naming_both(job, ftc, keys, where, message):
    r = ftc("compile", job(**keys))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert f"{where}: " in r.err and message in r.err and "fix: " in r.err


def test_llmforge_keys_with_no_effect_are_taken_recorded_and_named_once(job, ftc, tmp_path):
    liger = {"enabled": True, "kwargs": {"cross_entropy": True, "fused_linear_cross_entropy": False}}
    keys = {"num_data_blocks_per_device": 16, "dataset_size_scaling_factor": 10000, "min_update_steps": 100}
    keys["liger_kernel"] = liger
    spec = job(**keys)
    spec.write_text(spec.read_text() + "checkpoint_every_n_epochs: null\n")  # (job() drops a key given None)
    plan, r = _plan(ftc, spec, tmp_path / "plan.json")
    for key in ("num_data_blocks_per_device", "dataset_size_scaling_factor", "min_update_steps"):
        assert plan["llmforge"][key] == {"given": keys[key], "as": None}
        assert r.err.count(f"warning: {key}: no effect in ftc (") == 1
    assert plan["llmforge"]["checkpoint_every_n_epochs"] == {"given": None, "as": None}
    assert plan["spec"]["kernels"] == "liger"  # as kernels: liger does: applied on GPUs, an error at run time on CPU
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "no effect in ftc: num_data_blocks_per_device 16 (llmforge's Ray Data blocks per device" in shown
    assert "liger_kernel: Liger's loss kernels are not used (ftc computes the loss itself)" in shown


def test_a_spec_without_llmforge_keys_has_no_llmforge_section_and_plan_show_names_the_defaults_that_differ(
    job, ftc, tmp_path
):
    plan, _ = _plan(ftc, job(), tmp_path / "plan.json")
    assert "llmforge" not in plan  # the plan's bytes are those of a spec without them
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert (
        "llmforge  its defaults differ here: activation checkpointing off (llmforge: on), eval batch 4 (llmforge: 1), "
        "DeepSpeed ZeRO 2 (llmforge without a deepspeed key: none)"
    ) in shown
    plan, _ = _plan(ftc, job(gradient_checkpointing=True, eval_batch_size_per_device=1), tmp_path / "q.json")
    shown = ftc("plan", "show", tmp_path / "q.json").out
    assert "its defaults differ here: DeepSpeed ZeRO 2" in shown


def test_mlflows_create_experiment_if_not_exists_is_an_mlflow_setting_carried_in_the_plan(job, ftc, tmp_path):
    config = {"experiment_name": "gsm8k", "create_experiment_if_not_exists": False}
    plan, _ = _plan(ftc, job(logger={"provider": "mlflow", "provider_config": config}), tmp_path / "plan.json")
    assert plan["spec"]["logger"]["provider_config"] == config and "llmforge" not in plan
    r = ftc("compile", job(logger={"provider": "wandb", "provider_config": {"create_experiment_if_not_exists": True}}))
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.logger.provider_config.create_experiment_if_not_exists: wandb does not take it" in r.err or (
        "wandb does not take create_experiment_if_not_exists" in r.err
    )


def test_the_plans_llmforge_section_names_only_the_keys_and_settings_ftc_takes():
    """A plan read from a checkpoint is outside input: its llmforge section may hold nothing plan show cannot name."""
    from ftc.spec import plan_schema
    from ftc.spec._llmforge_keys import ALIASES, KEYS

    section = plan_schema()["properties"]["llmforge"]
    assert set(section["propertyNames"]["enum"]) == KEYS
    assert set(section["additionalProperties"]["properties"]["as"]["enum"]) == {*ALIASES.values(), None}


def test_a_resealed_plan_with_an_llmforge_key_ftc_does_not_know_is_refused(job, ftc, tmp_path):
    from ftc.spec.plan_format import plan_text, seal_plan

    plan, _ = _plan(ftc, job(num_data_blocks_per_device=4), tmp_path / "plan.json")
    plan["llmforge"]["rm -rf"] = {"given": 1, "as": None}
    (tmp_path / "forged.json").write_text(plan_text(seal_plan({k: v for k, v in plan.items() if k != "plan_id"})))
    r = ftc("plan", "show", tmp_path / "forged.json")
    assert r.code == ExitCode.PLAN_INVALID
    assert "$.llmforge: 'rm -rf' is not one of" in r.err
