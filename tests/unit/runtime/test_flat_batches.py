"""The flat layout: a packed micro-batch's rows end to end in one row, the samples' bounds and the loss positions
computed once on the host. Its loss and every gradient equal each sample's alone."""

from __future__ import annotations

import pytest
import torch

from ftc.runtime.training.batches import IGNORE, collate
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

ROWS = [(0, 1, 2), (3, 4), (5,)]


@pytest.fixture(scope="module")
def examples(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer

    from ftc.runtime.training.attention import register

    register()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fmt = PromptFormat(**{**PROMPT_FORMAT, "system_in_user": False, "default_system_message": ""})
    path = write_jsonl(tmp_path_factory.mktemp("d") / "d.jsonl", arithmetic_examples(6, seed=3, system="Add."))
    return tokenize_file(path, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer, cache_file=None)[0]


def _model(tiny_model, attention):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)


def test_a_flat_batch_is_one_row_without_padding_with_the_samples_bounds(examples):
    rows = collate(ROWS, examples, pad_id=0, packed=True)
    flat = collate(ROWS, examples, pad_id=0, packed=True, flat=True)
    lengths = [len(examples.ids[i]) for row in ROWS for i in row]
    assert flat.inputs["input_ids"].shape == (1, sum(lengths))
    assert flat.real_tokens == rows.real_tokens == sum(lengths)
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    assert flat.inputs["sample_bounds"].offsets == tuple(bounds)
    assert flat.inputs["cu_seq_lens_q"].tolist() == bounds and flat.inputs["cu_seq_lens_q"].dtype == torch.int32
    assert flat.inputs["max_length_q"] == max(lengths)
    assert flat.loss_tokens == rows.loss_tokens > 0
    shifted = flat.labels[:, 1:].reshape(-1)
    assert flat.loss_rows.tolist() == [i for i, label in enumerate(shifted.tolist()) if label != IGNORE]
    # no sample's first token is ever predicted from the sample before it
    assert all(flat.labels[0, b] == IGNORE for b in bounds[:-1])


def test_fixed_widths_pad_the_flat_row_with_samples_of_their_own_that_change_nothing(tiny_model, examples):
    # padding: max_length under the varlen attention: the row as wide as its padded rows, the padding attending only
    # to itself in pieces no longer than the longest row, carrying no loss; loss and gradients as unpadded
    flat = collate(ROWS, examples, pad_id=0, packed=True, flat=True)
    wide = collate(ROWS, examples, pad_id=0, packed=True, flat=True, pad_to=64)
    assert wide.inputs["input_ids"].shape == (1, 64 * len(ROWS))
    assert wide.real_tokens == flat.real_tokens and wide.loss_tokens == flat.loss_tokens
    assert wide.loss_rows.tolist() == flat.loss_rows.tolist()
    bounds = wide.inputs["sample_bounds"].offsets
    longest_row = max(sum(len(examples.ids[i]) for i in row) for row in ROWS)
    real = flat.inputs["input_ids"].shape[1]
    assert bounds[: len(flat.inputs["sample_bounds"].offsets)] == flat.inputs["sample_bounds"].offsets
    assert bounds[-1] == 64 * len(ROWS) and all(0 < b - a <= longest_row for a, b in zip(bounds, bounds[1:]))
    assert (wide.labels[0, real:] == IGNORE).all() and wide.inputs["max_length_q"] == flat.inputs["max_length_q"]
    losses = []
    for batch in (flat, wide):
        model = _model(tiny_model, "sdpa_varlen")
        loss = TokenLoss(model, zero_stage=0)(model, batch.inputs, batch.labels, batch.loss_rows)
        loss.backward()
        losses.append((loss.item(), {name: p.grad for name, p in model.named_parameters()}))
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-6)
    for name, grad in losses[0][1].items():
        assert torch.allclose(losses[1][1][name], grad, atol=1e-6, rtol=1e-5), name


def test_flat_packed_loss_and_gradients_equal_each_sample_alone(tiny_model, examples):
    alone_model, flat_model = _model(tiny_model, "sdpa"), _model(tiny_model, "sdpa_varlen")
    total = 0.0
    for row in ROWS:
        for i in row:
            batch = collate([(i,)], examples, pad_id=0, packed=False)
            logits = alone_model(**batch.inputs, use_cache=False).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch.labels[:, 1:].reshape(-1), reduction="sum"
            )  # the textbook loss (IGNORE is cross_entropy's default ignore_index)
            loss.backward()
            total += loss.item()
    flat = collate(ROWS, examples, pad_id=0, packed=True, flat=True)
    token_loss = TokenLoss(flat_model, zero_stage=0)
    assert token_loss.chunked
    loss = token_loss(flat_model, flat.inputs, flat.labels, flat.loss_rows)
    loss.backward()
    assert loss.item() == pytest.approx(total, rel=1e-5)
    alone = dict(alone_model.named_parameters())
    for name, p in flat_model.named_parameters():
        assert torch.allclose(p.grad, alone[name].grad, atol=1e-5, rtol=1e-4), name


def test_the_loss_rows_a_batch_brings_give_the_loss_found_without_them(tiny_model, examples):
    model = _model(tiny_model, "sdpa_varlen").eval()
    flat = collate(ROWS, examples, pad_id=0, packed=True, flat=True)
    token_loss = TokenLoss(model, zero_stage=0)
    with torch.no_grad():
        given = token_loss(model, flat.inputs, flat.labels, flat.loss_rows)
        found = token_loss(model, flat.inputs, flat.labels)
    assert given.item() == pytest.approx(found.item(), rel=1e-6)


def test_unpacked_examples_laid_flat_train_as_in_padded_rows(tiny_model, tmp_path):
    # sample_packing false: the same examples in the same micro-batch, each alone, with no padding position at all
    from transformers import AutoTokenizer

    talks = [("1 + 1", "2"), ("12 + 30 + 7 + 100", "149, as 12 + 30 is 42"), ("5 + 5 + 5", "15"), ("9 + 1", "10")]
    path = write_jsonl(
        tmp_path / "v.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in talks],
    )
    fmt = PromptFormat(**{**PROMPT_FORMAT, "system_in_user": False, "default_system_message": ""})
    examples = tokenize_file(
        path, render=lambda m: render_prompt_format(m, fmt), tokenizer=AutoTokenizer.from_pretrained(tiny_model),
        cache_file=None,
    )[0]  # fmt: skip
    rows = [(i,) for i in range(len(examples.ids))]
    padded = collate(rows, examples, pad_id=0, packed=False)
    flat = collate(rows, examples, pad_id=0, packed=False, flat=True)
    lengths = [len(ids) for ids in examples.ids]
    assert len(set(lengths)) > 1  # so the padded rows hold padding
    assert flat.inputs["input_ids"].shape == (1, sum(lengths)) == (1, flat.real_tokens)
    assert padded.inputs["input_ids"].numel() == len(lengths) * max(lengths) > flat.real_tokens
    assert flat.loss_tokens == padded.loss_tokens
    model = _model(tiny_model, "sdpa_varlen").eval()
    token_loss = TokenLoss(model, zero_stage=0)
    with torch.no_grad():
        a = token_loss(model, padded.inputs, padded.labels, padded.loss_rows)
        b = token_loss(model, flat.inputs, flat.labels, flat.loss_rows)
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


def _documented_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                            enable_gqa=False):  # fmt: skip
    """torch.nn.attention.varlen.varlen_attn as its documentation describes it ((T, H, D) tensors, cumulative bounds,
    window_size (-1, 0) causal), computed per sequence with SDPA."""
    assert window_size == (-1, 0) and cu_seq_q.dtype == torch.int32 and max_q == max_k
    assert query.shape[1] == key.shape[1] or enable_gqa
    bounds, out = cu_seq_q.tolist(), []
    for s, e in zip(bounds, bounds[1:]):
        q, k, v = (t[s:e].transpose(0, 1)[None] for t in (query, key, value))
        out.append(
            torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
            )[0].transpose(0, 1)
        )
    return torch.cat(out)


def test_the_varlen_kernel_is_called_with_the_flat_rows_bounds(tiny_model, examples, monkeypatch):
    # PyTorch's varlen kernel runs only on CUDA, which this machine lacks: a stand-in computing what its documentation
    # says (checked on a GPU by bench/gpu_checks.py) checks the call ftc makes: shapes, bounds, causality, GQA, scale
    import ftc.runtime.training.attention as attention

    calls = []

    def kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
               enable_gqa=False):  # fmt: skip
        calls.append(query.shape)
        return _documented_varlen_attn(
            query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale, window_size=window_size,
            enable_gqa=enable_gqa,
        )  # fmt: skip

    monkeypatch.setattr(attention, "_on_gpu", lambda t: True)
    monkeypatch.setattr(attention, "varlen_kernel", lambda: kernel)
    model = _model(tiny_model, "sdpa_varlen").to(torch.bfloat16).eval()
    flat = collate(ROWS, examples, pad_id=0, packed=True, flat=True)
    with torch.no_grad():
        fused = model(**flat.inputs, use_cache=False).logits.float()
        assert calls  # the kernel ran, in every layer
        monkeypatch.setattr(attention, "_on_gpu", lambda t: False)
        per_sample = model(**flat.inputs, use_cache=False).logits.float()
    assert len(calls) == model.config.num_hidden_layers
    assert torch.allclose(fused, per_sample, atol=2e-2), (fused - per_sample).abs().max()
