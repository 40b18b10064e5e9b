"""A training step queues its work: the host waits for the device only where it was designed to. Counted on the CPU
by intercepting every call that would wait on a GPU (support/host_syncs.py), through a real single-process DeepSpeed
engine; and the engine's optimizer is the one designed for each precision."""

from __future__ import annotations

import pytest
import torch

from ftc.runtime.training.batches import collate
from ftc.runtime.training.engine import engine_config, optimizer_path
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.step import train_step
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from support.engines import DEEPSPEED, tiny_engine
from support.host_syncs import HostSyncs
from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

#: the step's own wait (its loss, read once), and in bf16 DeepSpeed's two (BF16_Optimizer checks the gradient norm for
#: overflow, and compares the clipping coefficient with 1)
DESIGNED = {"fp32": {"item": 1}, "bf16": {"item": 1, "__bool__": 2}}


@pytest.fixture(scope="module")
def examples(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fmt = PromptFormat(**{**PROMPT_FORMAT, "system_in_user": False, "default_system_message": ""})
    path = write_jsonl(tmp_path_factory.mktemp("d") / "d.jsonl", arithmetic_examples(8, seed=4, system="Add."))
    return tokenize_file(path, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer, cache_file=None)[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_step_waits_for_the_device_only_where_designed(single_process, tiny_model, examples, precision):
    engine = tiny_engine(tiny_model, precision)
    token_loss = TokenLoss(engine.module, zero_stage=0)
    micro = [collate(rows, examples, pad_id=0, packed=True, flat=True) for rows in ([(0, 1), (2, 3)], [(4, 5), (6, 7)])]
    losses = []
    for _ in range(3):  # every step the same: nothing waited for once and cached (DeepSpeed's timer waits from step 2)
        with HostSyncs() as syncs:
            loss = train_step(engine, token_loss, micro, single_process)
            losses.append(loss.value(single_process))
        assert dict(syncs.calls) == DESIGNED[precision]
    assert losses[2] < losses[0]  # it trains


def test_bf16_trains_on_the_flat_bf16_optimizer_with_fp32_gradient_accumulation(single_process, tiny_model):
    engine = tiny_engine(tiny_model, "bf16")
    assert type(engine.optimizer).__name__ == "BF16_Optimizer"
    assert engine.get_data_types() == (torch.bfloat16, torch.float32)
    assert type(engine.optimizer.optimizer) is torch.optim.AdamW and engine.optimizer.optimizer.defaults["fused"]
    assert not engine.enable_backward_allreduce  # one process: nothing to all-reduce
    assert optimizer_path(DEEPSPEED, precision="bf16", world=1) == "bf16 optimizer (fp32 gradient accumulation)"


def test_fp32_trains_on_torch_fused_adamw_itself(single_process, tiny_model):
    engine = tiny_engine(tiny_model, "fp32")
    assert type(engine.optimizer) is torch.optim.AdamW and engine.optimizer.defaults["fused"]
    assert not engine.enable_backward_allreduce
    assert optimizer_path(DEEPSPEED, precision="fp32", world=1) == "torch AdamW"


def test_zero_3_on_one_process_keeps_its_gradient_epilogue_and_trains(single_process, tiny_model, examples):
    # ZeRO 3 partitions its gradients in the all-reduce step, even on one process: it is never skipped there
    engine = tiny_engine(tiny_model, "fp32", stage=3)
    assert engine.zero_optimization_stage() == 3 and engine.enable_backward_allreduce
    token_loss = TokenLoss(engine.module, zero_stage=3)
    micro = [collate([(0, 1), (2, 3)], examples, pad_id=0, packed=True, flat=True)]
    losses = [train_step(engine, token_loss, micro, single_process).value(single_process) for _ in range(3)]
    assert losses[2] < losses[0], losses


@pytest.mark.parametrize(
    ("stage", "precision", "world", "path", "engine_stage"),
    [
        (
            2,
            "bf16",
            1,
            "bf16 optimizer (fp32 gradient accumulation) (one process: ZeRO stage 2 has nothing to shard)",
            1,
        ),
        (2, "fp32", 1, "torch AdamW (one process: ZeRO stage 2 has nothing to shard)", 0),
        (1, "fp32", 1, "torch AdamW (one process: ZeRO stage 1 has nothing to shard)", 0),
        (0, "bf16", 4, "bf16 optimizer (fp32 gradient accumulation)", 1),
        (2, "bf16", 4, "ZeRO stage 2 optimizer", 2),
        (3, "bf16", 1, "ZeRO stage 3 optimizer", 3),
    ],
)
def test_the_optimizer_each_plan_trains_with(stage, precision, world, path, engine_stage):
    # one process has nothing to shard: ZeRO 1 and 2 train there as without ZeRO; ZeRO 3 (whose point can be
    # offloading) and several processes keep the plan's stage
    plan = {**DEEPSPEED, "zero_optimization": {"stage": stage}}
    assert optimizer_path(plan, precision=precision, world=world) == path
    config = engine_config(plan, precision=precision, world=world)
    assert config["zero_optimization"]["stage"] == engine_stage
    assert config["timers"] == {"throughput": {"enabled": False}}
    assert ("data_types" in config) == path.startswith("bf16 optimizer")


def test_offloading_keeps_zero_on_one_process():
    plan = {**DEEPSPEED, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    assert optimizer_path(plan, precision="bf16", world=1) == "ZeRO stage 2 optimizer"
    assert engine_config(plan, precision="bf16", world=1)["zero_optimization"]["stage"] == 2
    # "device": "none" (as DeepSpeed file templates write it) offloads nothing
    plan = {**DEEPSPEED, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}}
    assert optimizer_path(plan, precision="fp32", world=1).startswith("torch AdamW")


@pytest.mark.parametrize(
    ("precision", "written"), [("fp32", "zero_pp_rank_"), ("bf16", "zero_pp_rank_"), ("bf16", None)]
)
def test_a_checkpoint_of_another_optimizer_is_refused_with_what_to_do(single_process, tiny_model, tmp_path, precision,
                                                                     written):  # fmt: skip
    # an earlier ftc trained one process on ZeRO 2's optimizer (the spec's default stage): its checkpoints hold
    # zero_pp_rank_* files this engine's optimizer does not read (DeepSpeed failed with an AttributeError)
    from ftc.errors import ExitCode, UsageError
    from ftc.runtime.training.checkpoint import load_training_state

    state = tmp_path / "step-000004" / "training_state" / "state"
    state.mkdir(parents=True)
    (state / "mp_rank_00_model_states.safetensors").write_bytes(b"")
    if written:
        (state / f"{written}0_mp_rank_00_optim_states.safetensors").write_bytes(b"")
    engine = tiny_engine(tiny_model, precision)
    with pytest.raises(UsageError) as refused:
        load_training_state(engine, tmp_path / "step-000004", strict=True)
    assert refused.value.exit_code == ExitCode.USAGE  # `ftc run --resume` exits 2
    message = str(refused.value)
    assert "written by another DeepSpeed optimizer than this run's" in message
    assert "fix: resume it with the ftc that wrote it (its lineage.json names the version)" in message


def test_a_checkpoint_an_earlier_ftc_wrote_in_torchs_pickle_format_is_refused_unread(single_process, tiny_model,
                                                                                     tmp_path):  # fmt: skip
    from ftc.errors import ExitCode, UsageError
    from ftc.runtime.training.checkpoint import load_training_state

    state = tmp_path / "step-000004" / "training_state" / "state"
    state.mkdir(parents=True)
    torch.save({"module": {}}, state / "mp_rank_00_model_states.pt")  # what DeepSpeed's own engine wrote
    with pytest.raises(UsageError) as refused:
        load_training_state(tiny_engine(tiny_model, "fp32"), tmp_path / "step-000004", strict=True)
    assert refused.value.exit_code == ExitCode.USAGE
    assert "its training state is in torch's pickle format (training_state/state/*.pt), as an earlier ftc wrote it; " \
        "this ftc never unpickles" in str(refused.value)  # fmt: skip
