"""`ftc run` end to end on a tiny real model, in this process (one rank): modes, checkpoints, data, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import metrics, read_json
from support.models import arithmetic_examples, write_jsonl

FULL = dict(lora_config=None, learning_rate=3e-3, num_epochs=3, train_batch_size_per_device=4)


def test_full_parameter_run_learns_and_writes_a_complete_checkpoint(trained, tmp_path):
    write_jsonl(tmp_path / "more.jsonl", arithmetic_examples(128, seed=5))
    out = trained(**{**FULL, "train_path": "more.jsonl", "train_batch_size_per_device": 16})
    evals = metrics(out, "eval")
    assert [(e["step"], e["epoch"]) for e in evals] == [(0, 0), (8, 1), (16, 2), (24, 3)]
    losses = [e["eval_loss"] for e in evals]
    assert losses[0] == pytest.approx(6.24, abs=0.1)  # before training: a random model's ln(512)
    # a learnable task: the loss falls at every epoch
    assert losses[0] > losses[1] > losses[2] > losses[3] and losses[3] < 4.5, losses
    train = metrics(out, "train")
    assert [t["step"] for t in train] == list(range(1, 25))  # 128 examples / batch 16 = 8 steps x 3 epochs
    final = out / "checkpoints" / "step-000024"
    assert sorted(p.name for p in final.iterdir()) == [
        "chat_template.jinja",
        "config.json",
        "ftc_state.json",
        "generation_config.json",
        "lineage.json",
        "model.safetensors",
        "plan.json",
        "rng_state_rank0.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_state",
    ]
    assert (final / "plan.json").read_text() == (tmp_path / "plan.json").read_text()  # the plan that wrote it
    # the spec's ZeRO stage 2 has nothing to shard on one process: trained without ZeRO, the optimizer's state is
    # in the module's file, which is safetensors with its structure in JSON (no pickle)
    state_file = final / "training_state" / "state" / "mp_rank_00_model_states.safetensors"
    assert sorted(p.name for p in state_file.parent.iterdir()) == [state_file.name]
    assert not [p for p in final.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    from safetensors import safe_open

    with safe_open(str(state_file), framework="pt") as f:
        assert f.metadata()["format"] == "ftc-training-state/1" and len(f.keys()) > 0
    state = read_json(final / "ftc_state.json")
    assert (
        state["mode"] == "full" and state["global_step"] == 24 and state["epoch"] == 3 and state["step_in_epoch"] == 0
    )
    assert state["eval_loss"] == pytest.approx(losses[3]) and state["skipped_examples"] == {"train": 0, "valid": 0}
    assert (out / "best").resolve() == final and (out / "latest").resolve() == final
    assert not list((out / "checkpoints").glob(".*"))  # no temp folders left behind


def test_new_lora_adapter_checkpoint_is_an_adapter_naming_its_architecture(trained):
    out = trained(
        num_epochs=1,
        train_batch_size_per_device=8,
        lora_config={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False},
    )
    final = out / "checkpoints" / "step-000002"
    assert sorted(p.name for p in final.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "chat_template.jinja",
        "ftc_state.json",
        "lineage.json",
        "plan.json",
        "rng_state_rank0.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_state",
    ]
    config = read_json(final / "adapter_config.json")
    assert config["base_model_name_or_path"] == "ftc-tests/tiny-llama"
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    from safetensors.torch import load_file

    tensors = load_file(final / "adapter_model.safetensors")
    assert len(tensors) == 2 * 2 * 2 and all(t.numel() > 0 for t in tensors.values())  # 2 layers x (q, v) x (A, B)


def test_continuing_an_adapter_starts_from_its_weights(trained, tiny_adapter):
    from safetensors.torch import load_file

    out = trained(
        num_epochs=1,
        lora_config=None,
        initial_adapter_model_ckpt_path=str(tiny_adapter),
        train_batch_size_per_device=16,
    )
    state = read_json(out / "checkpoints" / "step-000001" / "ftc_state.json")
    assert state["mode"] == "lora-continue"
    before = load_file(tiny_adapter / "adapter_model.safetensors")
    after = load_file(out / "checkpoints" / "step-000001" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    # one small step from the given adapter: close to it, but moved
    assert all((after[k] - before[k]).abs().max() < 0.05 for k in before)
    assert any((after[k] - before[k]).abs().max() > 0 for k in before)


def test_the_same_plan_run_twice_gives_bitwise_identical_losses(trained, ftc, tmp_path):
    spec = dict(
        num_epochs=2, lora_config={"r": 4, "lora_dropout": 0.1, "target_modules": "all-linear"}, learning_rate=1e-2
    )
    a = trained("a.json", **spec)
    b = trained("b.json", **spec)
    assert [m["loss"] for m in metrics(a, "train")] == [m["loss"] for m in metrics(b, "train")]
    assert [m["eval_loss"] for m in metrics(a, "eval")] == [m["eval_loss"] for m in metrics(b, "eval")]

    # the same plan again, into the same folder: every checkpoint file and every lineage record is the same; only
    # the measured wall time, outside the seal, differs
    first = a.rename(tmp_path / "first-run")
    r = ftc("run", tmp_path / "a.json")
    assert r.code == 0, r.err
    for checkpoint in sorted((a / "checkpoints").iterdir()):
        once, again = (
            read_json(p / checkpoint.name / "lineage.json") for p in (first / "checkpoints", a / "checkpoints")
        )
        assert again["checkpoint"] == once["checkpoint"] and again["record_id"] == once["record_id"]
        assert "wall_time_s" in again["measured"] and "wall_time_s" not in again["results"]
    assert ftc("lineage", "verify", a).code == 0


def test_packing_trains_on_every_token_of_the_padded_layout(trained):
    padded = trained("padded.json", num_epochs=1, lora_config=None, train_batch_size_per_device=16)
    packed = trained(
        "packed.json",
        num_epochs=1,
        lora_config=None,
        train_batch_size_per_device=16,
        sample_packing=True,
        context_length=512,
    )
    # one step over the same 16 examples, once packed into one row: the same tokens, the same loss
    (a,), (b,) = metrics(padded, "train"), metrics(packed, "train")
    assert a["tokens"] == b["tokens"]
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


def test_checkpoints_every_n_steps_keep_the_newest_and_the_best(trained):
    out = trained(
        num_epochs=2,
        checkpoint_and_evaluation_frequency={"unit": "steps", "frequency": 2},
        num_checkpoints_to_keep=1,
        train_batch_size_per_device=4,
        **{k: v for k, v in FULL.items() if k not in ("num_epochs", "train_batch_size_per_device")},
    )
    evals = metrics(out, "eval")
    assert [e["step"] for e in evals] == [0, 2, 4, 6, 8]
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    best = min(evals[1:], key=lambda e: e["eval_loss"])
    assert kept == sorted({"step-000008", f"step-{best['step']:06d}"})


def test_an_example_longer_than_context_length_stops_the_run_before_training(job, ftc, tmp_path):
    records = arithmetic_examples(4, seed=1)
    records[2]["messages"][1]["content"] = "9 " * 200
    write_jsonl(tmp_path / "long.jsonl", records)
    ftc("compile", job(train_path="long.jsonl", context_length=64), "-o", tmp_path / "p.json")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.DATA_INVALID
    assert "error: long.jsonl:3: 216 tokens, longer than context_length 64" in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()


def test_skipped_examples_are_counted_in_the_checkpoint(trained, tmp_path):
    records = arithmetic_examples(8, seed=1)
    records[5]["messages"][1]["content"] = "9 " * 200
    write_jsonl(tmp_path / "long.jsonl", records)
    with open(tmp_path / "long.jsonl", "a") as f:
        f.write('{"messages": [{"role": "robot", "content": "beep"}]}\n')
    out = trained(
        train_path="long.jsonl",
        skip_bad_examples=True,
        num_epochs=1,
        **{k: v for k, v in FULL.items() if k != "num_epochs"},
    )
    state = read_json(sorted((out / "checkpoints").iterdir())[-1] / "ftc_state.json")
    assert state["skipped_examples"] == {"train": 2, "valid": 0}


def test_gradient_accumulation_weighs_tokens_like_one_big_batch(trained):
    one = trained(
        "one.json", num_epochs=1, lora_config=None, train_batch_size_per_device=8, gradient_accumulation_steps=1
    )
    two = trained(
        "two.json", num_epochs=1, lora_config=None, train_batch_size_per_device=4, gradient_accumulation_steps=2
    )
    a, b = metrics(one, "train"), metrics(two, "train")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5)  # same examples per step, same update
    assert metrics(two, "eval")[-1]["eval_loss"] == pytest.approx(metrics(one, "eval")[-1]["eval_loss"], abs=1e-5)


def test_tokenization_is_cached_per_data_digest(trained):
    import os
    from pathlib import Path

    trained("first.json", num_epochs=1, lora_config=None)
    cached = sorted(Path(os.environ["FTC_CACHE_DIR"]).glob("tokens/*.safetensors"))
    assert len(cached) == 2  # train and valid
    stamps = [p.stat().st_mtime_ns for p in cached]
    trained("second.json", num_epochs=1, lora_config=None)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # read back, not written again


def test_a_changed_byte_in_the_tokenized_cache_is_caught_and_the_data_tokenized_again(trained, job, ftc, tmp_path):
    import os
    from pathlib import Path

    first = trained("first.json", num_epochs=1, lora_config=None)
    for cached in Path(os.environ["FTC_CACHE_DIR"]).glob("tokens/*.safetensors"):
        blob = bytearray(cached.read_bytes())
        blob[-3] ^= 0x7F  # inside the last tensor: token ids, masks, lengths or lines would train on other data
        cached.write_bytes(bytes(blob))
    assert (
        ftc(
            "compile",
            job(name="again.yaml", num_epochs=1, lora_config=None, output_dir="again"),
            "-o",
            tmp_path / "again.json",
        ).code
        == 0
    )
    r = ftc("run", tmp_path / "again.json")
    assert r.code == 0, r.err
    assert r.err.count("is not the bytes it was stored as; making it again") == 2
    same = [[m[k] for k in ("step", "loss", "tokens")] for m in metrics(first, "train")]
    assert [[m[k] for k in ("step", "loss", "tokens")] for m in metrics(tmp_path / "again", "train")] == same


def test_an_input_changed_after_compiling_is_refused_with_expected_and_found(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "p.json")
    pinned = read_json(tmp_path / "p.json")["inputs"]["train"]["digest"]
    with open(tmp_path / "data" / "train.jsonl", "a") as f:
        f.write(json.dumps(arithmetic_examples(1, seed=9)[0]) + "\n")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED
    assert "train: " in r.err and "changed since the plan was compiled" in r.err
    assert f"expected {pinned}" in r.err and "found    sha256:" in r.err
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize(
    ("recipe", "after"), [("sft", "load_data"), ("dpo", "load_pairs"), ("sft", "load_for_training")]
)
def test_data_written_while_the_run_reads_it_stops_the_run_before_training(
    job, ftc, tmp_path, monkeypatch, recipe, after
):
    """Checked, then read: a writer that gets in between (right after the data is read, or right before it) must not
    leave the run training on, recording as pinned, or caching under the pinned digest bytes nobody checked."""
    import importlib
    import os

    from support.preference import preference_pairs
    from support.writes import written_after

    module = importlib.import_module(f"ftc.runtime.recipes.{recipe}")
    task = {"sft": "instruction_tuning", "dpo": "preference_tuning"}[recipe]
    if recipe == "dpo":
        write_jsonl(tmp_path / "data" / "train.jsonl", preference_pairs(8, seed=1))
    ftc("compile", job(output_dir="out", task=task, valid_path=None), "-o", tmp_path / "p.json")
    written_after(monkeypatch, module, after, tmp_path / "data" / "train.jsonl")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert "an input changed while ftc read it" in r.err
    assert f"    train: {tmp_path / 'data' / 'train.jsonl'}\n" in r.err
    assert "train_loss" not in r.err and not (tmp_path / "out" / "checkpoints").exists()
    cache = Path(os.environ["FTC_CACHE_DIR"])
    cached = sorted(p.parent.name for p in cache.rglob("*.safetensors"))
    # read before the write: its tokens cached (they are the pinned bytes'); read after it: nothing; no reference
    assert cached == ([] if after == "load_for_training" else ["tokens"] * (1 + (recipe == "dpo")))


def test_a_changed_file_inside_the_weights_folder_is_named(job, ftc, tmp_path, tiny_model):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "model")
    ftc("compile", job(initial_base_model_ckpt_path="model"), "-o", tmp_path / "p.json")
    (tmp_path / "model" / "config.json").write_text(
        (tmp_path / "model" / "config.json").read_text().replace("64", "65", 1)
    )
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED
    assert "config.json: expected sha256:" in r.err


def test_a_second_run_into_the_same_output_needs_resume(trained, ftc, tmp_path):
    trained(num_epochs=1, lora_config=None)
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.USAGE
    assert "already holds checkpoints (step-000004); resume with `ftc run PLAN --resume`" in r.err


def test_an_edited_plan_does_not_run(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "p.json")
    plan = read_json(tmp_path / "p.json")
    plan["spec"]["num_epochs"] = 9
    (tmp_path / "p.json").write_text(json.dumps(plan))
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.PLAN_INVALID


def test_a_plan_from_before_a_setting_existed_asks_to_recompile(job, ftc, tmp_path):
    from ftc.spec.plan_format import seal_plan

    ftc("compile", job(), "-o", tmp_path / "p.json")
    plan = read_json(tmp_path / "p.json")
    del plan["spec"]["attn_implementation"], plan["spec"]["kernels"]
    (tmp_path / "old.json").write_text(json.dumps(seal_plan(plan)))
    r = ftc("run", tmp_path / "old.json")
    assert r.code == ExitCode.PLAN_INVALID
    assert "$.spec: no attn_implementation, kernels (the plan was compiled by an older ftc)" in r.err
    assert "fix: recompile the spec with `ftc compile`" in r.err


def test_a_tokenizer_larger_than_the_embeddings_needs_resize(job, ftc, tmp_path, tiny_model):
    from support.models import build_tiny_model

    build_tiny_model(tmp_path / "small", vocab_size=256, tokenizer=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / "small" / name).write_bytes((tiny_model / name).read_bytes())
    ftc("compile", job(initial_base_model_ckpt_path="small"), "-o", tmp_path / "p.json")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.DATA_INVALID
    assert "has 472 tokens but the model only 256 embedding rows" in r.err
    assert "resize_token_embeddings: true" in r.err


def test_resuming_with_another_plan_is_refused(trained, job, ftc, tmp_path):
    trained(num_epochs=1, lora_config=None)
    ftc(
        "compile",
        job(name="plan.yaml", num_epochs=2, lora_config=None, output_dir="out-plan"),
        "-o",
        tmp_path / "plan.json",
    )
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == ExitCode.USAGE
    assert "was written by another plan" in r.err and "it cannot be resumed with" in r.err


def test_a_diverging_loss_stops_the_run(job, ftc, tmp_path):
    ftc(
        "compile",
        job(lora_config=None, learning_rate=1e12, max_grad_norm=None, num_epochs=3, train_batch_size_per_device=2),
        "-o",
        tmp_path / "p.json",
    )
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.TRAINING_FAILED
    assert "the training loss became nan at step" in r.err and "lower learning_rate" in r.err


def test_attention_kernels_and_checkpointing_change_speed_and_memory_not_the_loss(trained, job, ftc, tmp_path):
    base = dict(num_epochs=1, lora_config=None, train_batch_size_per_device=16, sample_packing=True, context_length=512)
    sdpa = trained("sdpa.json", **base)
    r = ftc(
        "compile",
        job(
            **base, attn_implementation="eager", activation_checkpointing=True, kernels="torch", output_dir="out-eager"
        ),
        "-o",
        tmp_path / "eager.json",
    )
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "eager.json")
    assert r.code == 0, r.err
    assert "eager attention, torch kernels, activation checkpointing" in r.err
    assert "loss: chunked (logits never materialized)" in r.err
    (a,), (b,) = metrics(sdpa, "train"), metrics(tmp_path / "out-eager", "train")
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"kernels": "liger", "lora_config": None},
            "kernels: liger needs an NVIDIA GPU, the liger-kernel package and a supported model: no GPU here",
        ),
        (
            {"attn_implementation": "flex_attention", "sample_packing": True},
            "attn_implementation: flex_attention trains only on GPUs (PyTorch has no FlexAttention backward on CPU)",
        ),
    ],
)
def test_gpu_only_settings_on_a_cpu_are_a_usage_error(job, ftc, tmp_path, setting, message):
    r = ftc("compile", job(**setting), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 2
    assert message in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_bf16_training_learns_like_fp32(trained, tmp_path, mode):
    # bf16 is the GPU default: weights load in bf16, DeepSpeed's BF16 optimizer keeps fp32 master weights and
    # accumulates the gradients of the step's two micro-batches in fp32, the loss is fp32
    write_jsonl(tmp_path / "more.jsonl", arithmetic_examples(64, seed=5))
    common = dict(train_path="more.jsonl", train_batch_size_per_device=8, gradient_accumulation_steps=2, num_epochs=2)
    if mode == "full":
        common.update(lora_config=None, learning_rate=3e-3)
        drop = 0.3
    else:
        common.update(learning_rate=3e-2, num_epochs=3)
        drop = 0.15  # rank 4 on q and v of a random model: it learns, slowly
    fp32_out, bf16_out = (
        trained("fp32.json", **common, precision="fp32"),
        trained("bf16.json", **common, precision="bf16"),
    )
    fp32, bf16 = metrics(fp32_out, "eval"), metrics(bf16_out, "eval")
    execution = read_json(bf16_out / "best" / "lineage.json")["execution"]
    assert execution["precision"] == "bf16"
    assert execution["optimizer"].startswith("bf16 optimizer (fp32 gradient accumulation)"), execution
    assert [e["eval_loss"] for e in bf16] == pytest.approx([e["eval_loss"] for e in fp32], rel=0.03)
    assert bf16[-1]["eval_loss"] < bf16[0]["eval_loss"] - drop, [e["eval_loss"] for e in bf16]  # it learns


def test_a_lock_link_planted_in_the_output_folder_stops_the_run_and_empties_nothing(job, ftc, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "output"
    out.mkdir()
    (out / ".ftc-lock-node0").symlink_to(victim)
    assert ftc("compile", job(), "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert f"{out / '.ftc-lock-node0'} is a symbolic link (to {victim}), not a file ftc wrote" in r.err
    assert "fix: remove it (and find out how it got there), or choose another output_dir" in r.err
    assert "Traceback" not in r.err
    assert victim.read_text() == "precious\n" and not (out / "checkpoints").exists()


def test_links_planted_at_a_checkpoint_s_temporary_name_are_never_written_through(job, ftc, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "output"
    (out / "checkpoints").mkdir(parents=True)
    for step in range(1, 5):
        (out / "checkpoints" / f".step-{step:06d}.tmp").symlink_to(elsewhere)
    assert ftc("compile", job(), "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert list(elsewhere.iterdir()) == []  # nothing written into (or deleted from) where the links pointed
    written = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert written and all(int(name.removeprefix("step-")) <= 4 for name in written), written  # where links were
    assert ftc("lineage", "verify", out).code == 0
