"""``torch_compile: true``: decoder layers compiled by torch.compile (inductor's C++ kernels on this CPU) train as the
uncompiled ones do, through a real single-process DeepSpeed engine, with one compilation for every flat micro-batch
of any length and any number of samples, the same parameter names (so the same checkpoint files), and decoding
left uncompiled."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from ftc.runtime.training.batches import collate
from ftc.runtime.training.compiled import compile_layers, eager_layers
from ftc.runtime.training.engine import build_engine
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.step import train_step
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

SPEC = type("Spec", (), dict(learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant", num_warmup_steps=0))
DEEPSPEED = {
    "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 0}, "managed_gradient_accumulation": False,
}  # fmt: skip
#: micro-batches of every shape a step meets: packed rows of 2 and 3 samples, one example per row, 1 to 6 samples
STEPS = ([(0, 1), (2, 3)], [(4, 5, 6), (7,)], [(8,)], [(9, 10, 11), (0, 2, 4)], [(1,), (3,)])


@pytest.fixture(scope="module")
def examples(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fmt = PromptFormat(**{**PROMPT_FORMAT, "system_in_user": False, "default_system_message": ""})
    path = write_jsonl(tmp_path_factory.mktemp("d") / "d.jsonl", arithmetic_examples(12, seed=5, system="Add."))
    return tokenize_file(path, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer, cache_file=None)[0]


def _model(tiny_model, *, lora: bool, checkpointing: bool):
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register

    register()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa_varlen")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
        model = get_peft_model(model, config)
    return model


def _losses(model, examples, single_process) -> list[float]:
    engine = build_engine(model, SPEC, DEEPSPEED, precision="fp32", total_steps=10, world=1)
    token_loss = TokenLoss(engine.module, zero_stage=0)
    losses = []
    for i, rows in enumerate(STEPS):
        micro = [collate(rows, examples, pad_id=0, packed=True, flat=True)]
        # after the first step (which compiles), no shape or count of samples compiles again
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            losses.append(train_step(engine, token_loss, micro, single_process).value(single_process))
    return losses


def test_compiled_layers_train_as_uncompiled_ones_with_one_compilation(single_process, tiny_model, examples):
    # LoRA's modules inside the layers and activation checkpointing around them are compiled too (full weights
    # compiled: tests/integration/test_distributed.py, two processes under ZeRO 3)
    torch._dynamo.reset()
    eager = _model(tiny_model, lora=True, checkpointing=True)
    compiled = copy.deepcopy(eager)
    names = list(compiled.state_dict())
    assert compile_layers(compiled) == 2  # the tiny model's decoder layers
    assert torch._dynamo.config.recompile_limit >= 32  # room for every kind of call a recipe makes
    assert list(compiled.state_dict()) == names  # compiled in place: the checkpoint's tensors keep their names
    expected = _losses(eager, examples, single_process)
    frames = torch._dynamo.utils.counters["frames"]["total"]
    got = _losses(compiled, examples, single_process)
    assert torch._dynamo.utils.counters["frames"]["total"] > frames  # the compiled layers did run compiled
    # ... with their code in a folder of this process's own (never the user's shared /tmp/torchinductor_*), and no
    # pickled graph cache
    folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert folder.name.startswith("ftc-compiled-") and folder.stat().st_mode & 0o777 == 0o700
    assert any(folder.rglob("*.py")) and not torch._inductor.config.fx_graph_cache
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert expected[-1] < expected[0]  # it trains


def test_decoding_runs_compiled_layers_uncompiled(tiny_model):
    from transformers import AutoTokenizer

    from ftc.runtime.training.generation import Sampling, generate

    torch._dynamo.reset()
    model = _model(tiny_model, lora=False, checkpointing=False)
    compile_layers(model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a KV cache's shapes, compiled, would recompile
        frames = torch._dynamo.utils.counters["frames"]["total"]
        ids = tokenizer("1 + 2 =")["input_ids"]
        generate(model, tokenizer, ids, stop_texts=[], stop_ids=[], sampling=Sampling(max_new_tokens=4))
        assert torch._dynamo.utils.counters["frames"]["total"] == frames  # nothing was traced
    model.train()
    flat = {"input_ids": torch.tensor([ids]), "position_ids": torch.arange(len(ids))[None]}
    with eager_layers():
        model(**flat)
    assert torch._dynamo.utils.counters["frames"]["total"] == frames
    model(**flat)  # outside it, the layers compile
    assert torch._dynamo.utils.counters["frames"]["total"] > frames
