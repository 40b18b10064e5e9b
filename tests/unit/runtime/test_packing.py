"""Packed rows: samples never attend to each other, so the packed loss equals the per-sample losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftc.runtime.training.batches import collate, epoch_rows, shard_rows
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from support.models import PROMPT_FORMAT, arithmetic_examples, reference_loss_sum, write_jsonl


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").eval()
    fmt = PromptFormat(**{**PROMPT_FORMAT, "system_in_user": False, "default_system_message": ""})
    path = write_jsonl(tmp_path_factory.mktemp("d") / "d.jsonl", arithmetic_examples(6, seed=3, system="Add."))
    examples, _ = tokenize_file(
        path, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer, cache_file=None
    )
    return model, examples


def _loss(model, batch):
    with torch.no_grad():
        logits = model(**batch.inputs, use_cache=False).logits
    return reference_loss_sum(logits, batch.labels)


def test_packed_loss_equals_the_per_sample_loss(setup):
    model, examples = setup
    per_sample = sum(_loss(model, collate([(i,)], examples, pad_id=0, packed=False)) for i in range(len(examples)))
    tokens = sum(collate([(i,)], examples, pad_id=0, packed=False).loss_tokens for i in range(len(examples)))
    packed_batch = collate([(0, 1, 2), (3, 4, 5)], examples, pad_id=0, packed=True)
    assert packed_batch.loss_tokens == tokens
    packed = _loss(model, packed_batch)
    assert abs(packed - per_sample) / tokens < 1e-5


def test_packed_logits_of_a_later_sample_match_running_it_alone(setup):
    model, examples = setup
    alone = collate([(1,)], examples, pad_id=0, packed=False)
    packed = collate([(0, 1)], examples, pad_id=0, packed=True)
    with torch.no_grad():
        a = model(**alone.inputs, use_cache=False).logits[0, : len(examples.ids[1])]
        p = model(**packed.inputs, use_cache=False).logits[
            0, len(examples.ids[0]) : len(examples.ids[0]) + len(examples.ids[1])
        ]
    assert torch.allclose(a, p, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa_varlen", "flex_attention"])
def test_packed_samples_attend_only_to_themselves_with_every_kernel(tiny_model, setup, attention):
    # sdpa_varlen: the CPU default (ftc's own); flex_attention: the GPU default, whose block mask transformers must
    # build from the restarting position ids (forward only here: PyTorch has no FlexAttention backward on CPU)
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register

    register()
    sdpa, examples = setup
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention).eval()
    packed = collate([(0, 1, 2), (3, 4)], examples, pad_id=0, packed=True, pad_to=96)
    with torch.no_grad():
        got = model(**packed.inputs, use_cache=False).logits
        for row, samples in enumerate([(0, 1, 2), (3, 4)]):
            start = 0
            for i in samples:
                n = len(examples.ids[i])
                alone = sdpa(**collate([(i,)], examples, pad_id=0, packed=False).inputs, use_cache=False).logits[0]
                assert torch.allclose(got[row, start : start + n], alone, atol=1e-5), (attention, row, i)
                start += n


def test_sdpa_varlen_trains_like_sdpa(setup, tiny_model):
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register

    register()
    _, examples = setup
    batch = collate([(0, 1, 2), (3, 4, 5)], examples, pad_id=0, packed=True)
    grads = {}
    for attention in ("sdpa", "sdpa_varlen"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)
        logits = model(**batch.inputs, use_cache=False).logits
        torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch.labels[:, 1:].reshape(-1), ignore_index=-100
        ).backward()
        grads[attention] = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads["sdpa"].items():
        assert torch.allclose(grads["sdpa_varlen"][name], g, atol=1e-5), name


def test_rows_fit_the_context_and_cover_every_sample_once():
    lengths = np.array([30, 10, 25, 40, 5, 33, 12])
    rows = epoch_rows(lengths, epoch=0, seed=1, shuffle=True, pack_to=64)
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(lengths[list(row)].sum() <= 64 for row in rows)
    assert rows == epoch_rows(lengths, epoch=0, seed=1, shuffle=True, pack_to=64)
    assert rows != epoch_rows(lengths, epoch=1, seed=1, shuffle=True, pack_to=64)


def test_every_rank_gets_as_many_rows():
    rows = [(i,) for i in range(5)]
    shards = [shard_rows(rows, r, 2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert sorted(set(i for s in shards for (i,) in s)) == list(range(5))


def test_sdpa_varlen_keeps_a_sliding_window(tmp_path):
    from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

    from ftc.runtime.training.attention import register

    register()
    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=97,
        sliding_window=6,
    )
    MistralForCausalLM(config).save_pretrained(tmp_path)
    sdpa = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    varlen = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa_varlen").eval()
    a, b = torch.randint(3, 97, (1, 5)), torch.randint(3, 97, (1, 20))  # b is longer than the window
    packed = {"input_ids": torch.cat([a, b], 1), "position_ids": torch.cat([torch.arange(5), torch.arange(20)])[None]}
    with torch.no_grad():
        got = varlen(**packed, use_cache=False).logits[0, 5:]
        alone = sdpa(input_ids=b, use_cache=False).logits[0]
        without_window = (
            AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa", sliding_window=None)
            .eval()(input_ids=b, use_cache=False)
            .logits[0]
        )
    assert torch.allclose(got, alone, atol=1e-5)
    assert not torch.allclose(got, without_window, atol=1e-3)  # the window matters for this sample
