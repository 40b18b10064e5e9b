"""llmforge's DeepSpeed files (tests/data/llmforge/deepspeed_configs/, verbatim) compile as given: every "auto" is
filled from the spec and the model, so the plan carries numbers, and what ftc cannot honour is a problem."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.errors import ExitCode
from ftc.spec.plan_checks import deepspeed_problems

from conftest import REPO, read_json

FILES = REPO / "tests" / "data" / "llmforge" / "deepspeed_configs"
#: the tiny model's hidden size is 64: what transformers' DeepSpeed integration fills ZeRO's "auto"s with
BY_HIDDEN_SIZE = {
    "reduce_bucket_size": 64 * 64,
    "stage3_prefetch_bucket_size": int(0.9 * 64 * 64),
    "stage3_param_persistence_threshold": 10 * 64,
}


def _autos(value) -> list:
    if isinstance(value, dict):
        return [a for v in value.values() for a in _autos(v)]
    return [value] if value == "auto" else []


def _compile(job, ftc, tmp_path, ds: dict | str, **spec):
    if isinstance(ds, str):
        shutil.copy(FILES / ds, tmp_path / "ds.json")
    else:
        (tmp_path / "ds.json").write_text(json.dumps(ds))
    return ftc("compile", job(deepspeed={"config_path": "ds.json"}, **spec), "-o", tmp_path / "p.json")


@pytest.mark.parametrize("name", sorted(str(p.relative_to(FILES)) for p in FILES.rglob("*.json")))
def test_each_llmforge_deepspeed_file_compiles_with_every_auto_filled(job, ftc, tmp_path, name):
    given = json.loads((FILES / name).read_text())
    r = _compile(job, ftc, tmp_path, name, num_devices=2, train_batch_size_per_device=3, gradient_accumulation_steps=2)
    assert r.code == 0, r.err
    ds = read_json(tmp_path / "p.json")["deepspeed"]
    assert _autos(ds) == []
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        3,
        2,
        12,
    )
    assert ds["gradient_clipping"] == 1.0  # the spec's max_grad_norm
    assert ds["fp16"] == {"enabled": False} and ds["bf16"] == given["bf16"]  # precision auto: the file's bf16
    zero, given_zero = ds["zero_optimization"], given["zero_optimization"]
    assert zero["stage"] == given_zero["stage"]
    for key, value in given_zero.items():
        if value == "auto":
            assert zero[key] == BY_HIDDEN_SIZE[key], key
        elif isinstance(value, float):  # 5e8 in the file: a whole number, carried as an integer
            assert zero[key] == int(value) and type(zero[key]) is int, key
    if zero["stage"] == 3:  # the older name of this setting, carried under the current one
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert "gather_16bit_weights_on_model_save" not in zero


def test_zero_autos_are_filled_from_the_hidden_size_of_the_named_model(job, ftc, tmp_path):
    r = _compile(
        job,
        ftc,
        tmp_path,
        "zero_3.json",
        model_id="meta-llama/Meta-Llama-3-8B",
        initial_base_model_ckpt_path=None,
        context_length=None,
    )
    assert r.code == 0, r.err
    zero = read_json(tmp_path / "p.json")["deepspeed"]["zero_optimization"]
    assert (
        zero["reduce_bucket_size"],
        zero["stage3_prefetch_bucket_size"],
        zero["stage3_param_persistence_threshold"],
    ) == (4096 * 4096, 15099494, 40960)


@pytest.mark.parametrize(("precision", "enabled"), [("bf16", True), ("fp32", False), ("auto", "auto")])
def test_bf16_auto_is_the_spec_precision(job, ftc, tmp_path, precision, enabled):
    ds = {"bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2}}
    assert _compile(job, ftc, tmp_path, ds, precision=precision).code == 0
    # with precision auto the device decides at run time (bf16 on GPUs, fp32 on CPU), as for a spec without a file
    assert read_json(tmp_path / "p.json")["deepspeed"]["bf16"] == {"enabled": enabled}


def test_fp16_on_is_refused_because_ftc_trains_in_bf16_or_fp32(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, {"fp16": {"enabled": True}, "zero_optimization": {"stage": 2}})
    assert r.code == ExitCode.SPEC_INVALID
    assert "the DeepSpeed config turns fp16 on; ftc trains in bf16 or fp32" in r.err
    # and a plan resealed with it on is not carried
    assert deepspeed_problems({"fp16": {"enabled": True}}) != []


def test_an_auto_ftc_does_not_fill_is_named_with_its_path(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, {"zero_optimization": {"stage": 3, "sub_group_size": "auto"}})
    assert r.code == ExitCode.SPEC_INVALID
    assert 'the DeepSpeed config has zero_optimization.sub_group_size: "auto", which ftc does not fill' in r.err
    assert "fix: set zero_optimization.sub_group_size to a number in the file" in r.err
    assert "'auto' is not of type" not in r.err  # said once, in words


def test_the_older_and_current_names_of_one_setting_may_not_disagree(job, ftc, tmp_path):
    zero = {"stage": 3, "gather_16bit_weights_on_model_save": False, "stage3_gather_16bit_weights_on_model_save": True}
    r = _compile(job, ftc, tmp_path, {"zero_optimization": zero})
    assert r.code == ExitCode.SPEC_INVALID
    assert "sets gather_16bit_weights_on_model_save and stage3_gather_16bit_weights_on_model_save apart" in r.err


#: transformers' documented ZeRO-3 example's optimizer and scheduler (every value "auto"), the warmup made linear
HF_OPTIMIZER = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}
HF_SCHEDULER = {
    "type": "WarmupDecayLR",
    "params": {
        "warmup_min_lr": "auto",
        "warmup_max_lr": "auto",
        "warmup_num_steps": "auto",
        "total_num_steps": "auto",
        "warmup_type": "linear",  # DeepSpeed's default is a log curve
    },
}


def test_an_optimizer_and_scheduler_of_autos_are_what_ftc_builds_and_stay_out_of_the_plan(job, ftc, tmp_path):
    ds = {"optimizer": HF_OPTIMIZER, "scheduler": HF_SCHEDULER, "zero_optimization": {"stage": 2}}
    r = _compile(job, ftc, tmp_path, ds, lr_scheduler_type="linear", num_warmup_steps=2, learning_rate=1e-4)
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "p.json")
    assert "optimizer" not in plan["deepspeed"] and "scheduler" not in plan["deepspeed"]
    assert (plan["spec"]["learning_rate"], plan["spec"]["lr_scheduler_type"]) == (1e-4, "linear")  # what ftc builds


def test_an_optimizer_or_scheduler_that_is_not_what_ftc_builds_is_refused_naming_each_difference(job, ftc, tmp_path):
    ds = {
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": "auto"}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}},  # DeepSpeed's log warmup
        "zero_optimization": {"stage": 2},
    }
    r = _compile(
        job, ftc, tmp_path, ds, learning_rate=1e-4, lr_scheduler_type="constant_with_warmup", num_warmup_steps=5
    )
    assert r.code == ExitCode.SPEC_INVALID
    assert (
        'the DeepSpeed config\'s "optimizer" is not the AdamW ftc builds from the spec: weight_decay left to '
        "DeepSpeed's default (ftc: 0.0); lr 0.0003 (ftc: 0.0001); betas [0.9, 0.95] (ftc: [0.9, 0.999])"
    ) in r.err
    assert (
        'the DeepSpeed config\'s "scheduler" is not the constant_with_warmup schedule ftc builds from the spec: '
        'warmup_max_lr left to DeepSpeed\'s default (ftc: 0.0001); warmup_type "log"'
    ) in r.err


@pytest.mark.parametrize(
    "ds, found, fix",
    [
        ({"zero_optimization": {"stage": 2}, "tensorboard": {"enabled": True}}, "'tensorboard' was unexpected",
         "remove it from the file; ftc writes metrics.jsonl and the spec's logger feeds a tracker"),
        ({"zero_optimization": {"stage": 2, "round_robin": True}}, "'round_robin' was unexpected",
         "remove that setting from the file, or give it a value ftc takes"),
        ({"zero_optimization": {"stage": 2}, "steps_per_print": "often"}, "'often' is not of type 'integer'",
         "remove that setting from the file, or give it a value ftc takes"),
    ],
)  # fmt: skip
def test_a_setting_the_plan_does_not_carry_gets_the_fix_that_fits_it(job, ftc, tmp_path, ds, found, fix):
    """Only a section that writes or reports is answered with ftc's own metrics and tracker."""
    r = _compile(job, ftc, tmp_path, ds)
    assert r.code == ExitCode.SPEC_INVALID
    assert found in r.err and f"fix: {fix}" in r.err
    assert r.err.count("metrics.jsonl") == (1 if "tensorboard" in found else 0)
