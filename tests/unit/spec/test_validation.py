"""Every validation error: its message (where, what, what to do) and its exit code, all reported at once."""

from __future__ import annotations

import json

import pytest

from ftc.errors import ExitCode

SPEC_INVALID = ExitCode.SPEC_INVALID
INPUT_UNRESOLVABLE = ExitCode.INPUT_UNRESOLVABLE


def test_unknown_key_suggests_the_closest_known_key(job, ftc):
    r = ftc("compile", job(learing_rate=2e-4))
    assert r.code == SPEC_INVALID
    assert "job.yaml:" in r.err
    assert "$.learing_rate: unknown key; did you mean `learning_rate`?" in r.err


def test_a_key_at_the_wrong_level_says_where_it_belongs(job, ftc):
    r = ftc("compile", job(prompt_format={"user": "{instruction}", "assistant": "{instruction}"}))
    assert r.code == SPEC_INVALID
    assert "$.prompt_format: unknown key" in r.err
    assert "belongs at $.generation_config.prompt_format" in r.err


def test_errors_name_the_line_of_the_spec_file(job, ftc):
    path = job("model_id: ftc-tests/tiny-llama\ntrain_path: data/train.jsonl\nnum_epochs: 0\n")
    r = ftc("compile", path)
    assert r.code == SPEC_INVALID
    assert f"{path}:3: $.num_epochs: must be >= 1 (found: 0)" in r.err
    assert "fix: use a value >= 1" in r.err


def test_wrong_type_names_expected_and_found(job, ftc):
    r = ftc("compile", job(learning_rate="fast"))
    assert r.code == SPEC_INVALID
    assert '$.learning_rate: expected number, got string (found: "fast")' in r.err


@pytest.mark.parametrize(
    "logger, message",
    [
        ({"provider": "tensorboard", "provider_config": {"project": "x"}}, "tensorboard does not take project"),
        ({"provider": "mlflow", "provider_config": {"tracking_uri": "http://u:hunter2@127.0.0.1:5000"}},
         "the tracking URI holds credentials"),
        ({"provider": "tensorboard", "provider_config": {"log_dir": "../elsewhere"}}, "inside the output folder"),
        ({"provider": "comet"}, "$.logger.provider"),
        ({"provider": "wandb", "provider_config": {"api_key": "secret"}}, "$.logger.provider_config.api_key"),
    ],
)  # fmt: skip
def test_a_logger_is_checked_and_never_takes_credentials(job, ftc, logger, message):
    r = ftc("compile", job(logger=logger))
    assert r.code == ExitCode.SPEC_INVALID
    assert message in r.err
    assert "hunter2" not in r.err and "secret" not in r.err.replace("secret_", "")


def test_enum_typo_suggests_the_choice(job, ftc):
    r = ftc("compile", job(padding="longst"))
    assert "$.padding: must be one of: longest, max_length" in r.err
    assert "did you mean `longest`?" in r.err


def test_missing_required_key_is_named_with_its_meaning(job, ftc):
    r = ftc("compile", job(train_path=None))
    assert r.code == SPEC_INVALID
    assert "missing required key `train_path`" in r.err
    assert "Training data: JSONL" in r.err


def test_nested_error_inside_an_optional_object_is_reported_at_its_field(job, ftc):
    r = ftc("compile", job(lora_config={"r": 0, "target_modules": []}))
    assert "$.lora_config.r: must be >= 1 (found: 0)" in r.err
    assert "$.lora_config.target_modules: needs at least 1 item(s)" in r.err
    assert "not valid under any" not in r.err


def test_scientific_notation_without_a_dot_reads_as_a_number(job, tmp_path):
    from ftc.spec import load_spec

    loaded = load_spec(job("model_id: x\ntrain_path: data/train.jsonl\nlearning_rate: 1e-4\n"))
    assert loaded.problems == []
    assert loaded.spec.learning_rate == pytest.approx(1e-4)


def test_yaml_syntax_error_names_the_line(job, ftc):
    path = job("model_id: x\ntrain_path: [unclosed\n")
    r = ftc("compile", path)
    assert r.code == SPEC_INVALID
    assert f"{path}:3: $: not valid YAML/JSON" in r.err


def test_duplicate_keys_are_refused(job, ftc):
    path = job("model_id: x\ntrain_path: data/train.jsonl\nseed: 1\nseed: 2\n")
    r = ftc("compile", path)
    assert r.code == SPEC_INVALID
    assert f"{path}:4: $.seed: duplicate key (first given on line 3)" in r.err


def test_prompt_format_without_instruction_placeholder(job, ftc):
    fmt = {"system": "<s>", "user": "[INST] {instruction} [/INST]", "assistant": "{instruction}"}
    r = ftc("compile", job(generation_config={"prompt_format": fmt}))
    assert r.code == SPEC_INVALID
    assert "$.generation_config.prompt_format.system: the system template has no {instruction} placeholder" in r.err


def test_lora_config_with_full_parameter_mode_is_refused(job, ftc):
    r = ftc("compile", job(training_mode="full"))
    assert r.code == SPEC_INVALID
    assert "lora_config is given but training_mode is full" in r.err


def test_full_parameter_continuation_from_an_adapter_is_refused(job, ftc, tiny_adapter):
    r = ftc("compile", job(training_mode="full", lora_config=None, initial_adapter_model_ckpt_path=str(tiny_adapter)))
    assert r.code == SPEC_INVALID
    assert "full-parameter training cannot continue from a LoRA adapter" in r.err
    assert "merge the adapter into its base weights" in r.err


def test_target_modules_the_architecture_lacks(job, ftc):
    r = ftc("compile", job(lora_config={"target_modules": ["q_proj", "qkv_proj"]}))
    assert r.code == SPEC_INVALID
    assert "has no module matching 'qkv_proj'" in r.err
    assert "choose from: down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in r.err


def test_target_modules_checked_for_a_registry_model_without_weights(job, ftc):
    r = ftc(
        "compile",
        job(model_id="Qwen/Qwen2.5-0.5B", initial_base_model_ckpt_path=None, lora_config={"target_modules": "c_attn"}),
    )
    assert r.code == SPEC_INVALID
    assert "Qwen/Qwen2.5-0.5B (qwen2) has no module matching 'c_attn'" in r.err


def test_context_length_above_the_models_maximum(job, ftc):
    r = ftc("compile", job(context_length=1024))
    assert r.code == SPEC_INVALID
    assert "$.context_length: 1024 is above the model's max_position_embeddings (512)" in r.err


def test_devices_that_do_not_divide_over_nodes(job, ftc):
    r = ftc("compile", job(num_devices=3, num_nodes=2))
    assert r.code == SPEC_INVALID
    assert "3 devices cannot be split evenly over 2 nodes" in r.err


def test_deepspeed_file_batch_size_that_does_not_divide(job, ftc, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"train_batch_size": 30, "zero_optimization": {"stage": 2}}))
    r = ftc("compile", job(deepspeed={"config_path": "ds.json"}, num_devices=2, train_batch_size_per_device=4))
    assert r.code == SPEC_INVALID
    assert "train_batch_size 30 is not a multiple of train_batch_size_per_device x num_devices = 8" in r.err


def test_deepspeed_file_and_inline_stage_conflict(job, ftc, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    r = ftc("compile", job(deepspeed={"config_path": "ds.json", "zero_stage": 3}))
    assert "$.deepspeed.zero_stage: zero_stage is set here and also comes from config_path" in r.err


def test_adapter_config_disagreeing_with_lora_config(job, ftc, tiny_adapter):
    r = ftc("compile", job(initial_adapter_model_ckpt_path=str(tiny_adapter), lora_config={"r": 16, "lora_alpha": 8}))
    assert r.code == SPEC_INVALID
    assert "$.lora_config.r: the spec says r = 16 but the adapter has 4" in r.err
    assert "lora_alpha" not in r.err.split("r = 16")[1].split("\n")[0]  # alpha agrees: not reported


def test_adapter_trained_on_another_base_model(job, ftc, tiny_adapter):
    r = ftc(
        "compile",
        job(
            model_id="meta-llama/Llama-3.2-1B",
            initial_base_model_ckpt_path=None,
            lora_config=None,
            initial_adapter_model_ckpt_path=str(tiny_adapter),
        ),
    )
    assert r.code == SPEC_INVALID
    assert "the adapter was trained on ftc-tests/tiny-llama, but model_id is meta-llama/Llama-3.2-1B" in r.err


def test_bring_your_own_weights_that_do_not_match_model_id(job, ftc):
    r = ftc("compile", job(model_id="meta-llama/Meta-Llama-3-8B"))
    assert r.code == SPEC_INVALID
    for field, mine, theirs in [
        ("hidden_size", 64, 4096),
        ("num_hidden_layers", 2, 32),
        ("num_attention_heads", 4, 32),
        ("num_key_value_heads", 2, 8),
        ("vocab_size", 512, 128256),
    ]:
        assert f"config.json has {field} = {mine} but meta-llama/Meta-Llama-3-8B has {theirs}" in r.err


def test_unknown_model_id_without_weights_suggests_known_ids(job, ftc):
    r = ftc("compile", job(model_id="meta-llama/llama-3.2-1b", initial_base_model_ckpt_path=None))
    assert r.code == SPEC_INVALID
    assert "unknown model_id" in r.err
    assert "did you mean meta-llama/Llama-3.2-1B?" in r.err


def test_unknown_model_id_with_weights_lacking_config_json(job, ftc, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"\0" * 16)
    r = ftc("compile", job(initial_base_model_ckpt_path=str(weights)))
    assert r.code == SPEC_INVALID
    assert "unknown model_id, and the weights folder has no config.json" in r.err


def test_pickled_weights_are_refused(job, ftc, tmp_path, tiny_model):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text((tiny_model / "config.json").read_text())
    (weights / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    r = ftc("compile", job(initial_base_model_ckpt_path=str(weights)))
    assert r.code == INPUT_UNRESOLVABLE
    assert "only pickled weights here (pytorch_model.bin): ftc loads safetensors only" in r.err


def test_missing_data_file_is_an_unresolvable_input(job, ftc):
    r = ftc("compile", job(train_path="data/nope.jsonl"))
    assert r.code == INPUT_UNRESOLVABLE
    assert "$.train_path: no such file or folder:" in r.err
    assert '(found: "data/nope.jsonl")' in r.err


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ('{"text": "hi"}', 'no "messages" list'),
        (
            '{"messages": [{"role": "bot", "content": "x"}]}',
            'messages[0] has unknown role "bot" (expected one of: system, user, assistant)',
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}',
            "messages[1] is an empty assistant turn",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ],
)
def test_bad_data_line_is_reported_as_file_line_reason(job, ftc, tmp_path, line, reason):
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    (tmp_path / "bad.jsonl").write_text(f"{good}\n{good}\n{line}\n{good}\n")
    r = ftc("compile", job(train_path="bad.jsonl"))
    assert r.code == SPEC_INVALID
    assert "bad.jsonl:3: $.train_path (spec line 3): " + reason in r.err


def test_every_problem_is_reported_at_once(job, ftc):
    r = ftc("compile", job(learing_rate=1, context_length=4096, valid_path="missing.jsonl", num_devices=3, num_nodes=2))
    assert r.code == SPEC_INVALID
    assert "4 problems" in r.err
    for expected in ["learing_rate", "context_length", "missing.jsonl", "3 devices"]:
        assert expected in r.err


def test_user_facing_errors_print_no_traceback_unless_debug(job, ftc):
    path = job(learing_rate=1)
    assert "Traceback" not in ftc("compile", path).err
    assert "Traceback" in ftc("--debug", "compile", path).err


def test_missing_spec_file_is_a_usage_error(ftc, tmp_path):
    r = ftc("compile", tmp_path / "nope.yaml")
    assert r.code == ExitCode.USAGE
    assert "no such spec file" in r.err


def test_unknown_option_is_a_usage_error(ftc):
    assert ftc("compile", "--nope").code == ExitCode.USAGE


def test_empty_data_file_is_refused(job, ftc, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    r = ftc("compile", job(train_path="empty.jsonl"))
    assert r.code == SPEC_INVALID
    assert "empty.jsonl:1: $.train_path (spec line 3): no examples (the file is empty)" in r.err


def test_skip_bad_examples_compiles_and_says_how_many_are_skipped(job, ftc, tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    (tmp_path / "some-bad.jsonl").write_text(f"{good}\n{{oops\n{good}\n[]\n")
    r = ftc("compile", job(train_path="some-bad.jsonl", skip_bad_examples=True), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert "warning: train: 2 bad line(s) in some-bad.jsonl will be skipped (skip_bad_examples)" in r.err
    train = json.loads((tmp_path / "p.json").read_text())["inputs"]["train"]
    assert (train["records"], train["bad_records"]) == (2, 2)


def test_triple_quoted_templates_get_a_yaml_hint(job, ftc):
    path = job(
        "model_id: x\ntrain_path: data/train.jsonl\ngeneration_config:\n"
        '  prompt_format:\n    system: """{instruction}"""\n'
    )
    r = ftc("compile", path)
    assert r.code == SPEC_INVALID
    assert 'fix: triple quotes are not YAML: write one pair, e.g. system: "{instruction}"' in r.err


def test_system_in_user_needs_a_system_placeholder(job, ftc):
    fmt = {
        "system": "<<SYS>>{instruction}<</SYS>>",
        "user": "[INST] {instruction} [/INST]",
        "assistant": "{instruction}",
        "system_in_user": True,
    }
    r = ftc("compile", job(generation_config={"prompt_format": fmt}))
    assert r.code == SPEC_INVALID
    assert (
        "$.generation_config.prompt_format.user: system_in_user is true "
        "but the user template has no {system} placeholder" in r.err
    )


def test_a_folder_given_as_the_spec_is_a_usage_error(ftc, tmp_path):
    r = ftc("compile", tmp_path)
    assert r.code == ExitCode.USAGE
    assert "is a folder; give the spec file (job.yaml)" in r.err


def test_a_spec_that_is_not_utf8_is_a_usage_error(ftc, tmp_path):
    (tmp_path / "job.yaml").write_bytes(b"model_id: \xff\xfe\n")
    r = ftc("compile", tmp_path / "job.yaml")
    assert r.code == ExitCode.USAGE
    assert "not UTF-8 text (invalid start byte at byte 10)" in r.err


def test_every_bad_data_line_is_reported_at_once_up_to_a_cap(job, ftc, tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    bad = ['{"text": "hi"}', "{not json", '{"messages": []}']
    lines = [good] + [bad[i % 3] for i in range(12)] + [good]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    r = ftc("compile", job(train_path="bad.jsonl"))
    assert r.code == SPEC_INVALID
    assert "11 problems" in r.err  # ten lines named one by one, then a count
    for line in range(2, 12):
        assert f"bad.jsonl:{line}: $.train_path (spec line 3): " in r.err
    assert "bad.jsonl:11: $.train_path (spec line 3): and 2 more bad lines after" in r.err


def test_a_json_error_at_the_end_of_a_line_names_its_column(job, ftc, tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    (tmp_path / "bad.jsonl").write_text(f"{good}\n{good[:-1]}\n")  # the closing brace is missing
    r = ftc("compile", job(train_path="bad.jsonl"))
    assert r.code == SPEC_INVALID
    assert (
        f"bad.jsonl:2: $.train_path (spec line 3): not valid JSON (Expecting ',' delimiter at column {len(good)})"
        in r.err
    )
