"""A classifier's labels as tokens: a label already one token keeps it, the others are added as special tokens in
order (the same ids every time), and the embeddings grow with new rows at the mean of the old ones."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftc.runtime.training.label_tokens import add_label_tokens, grow_embeddings, trainable_token_targets
from ftc.runtime.training.tokens import label_token_ids


def _tokenizer(folder):
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def test_labels_not_one_token_are_added_in_order_and_one_token_labels_keep_theirs(tiny_model):
    tokenizer = _tokenizer(tiny_model)
    one = tokenizer.convert_ids_to_tokens(tokenizer.encode("4", add_special_tokens=False))
    assert len(one) == 1  # a digit of the arithmetic corpus: one token already
    size = len(tokenizer)
    added = add_label_tokens(tokenizer, ["[[unsafe]]", "4", "[[safe]]"])
    assert added == [size, size + 1]
    assert label_token_ids(tokenizer, ["[[unsafe]]", "4", "[[safe]]"]) == [size, tokenizer.encode("4")[0], size + 1]
    again = _tokenizer(tiny_model)  # a second stage adds them to the same base tokenizer: the same ids
    assert add_label_tokens(again, ["[[unsafe]]", "4", "[[safe]]"]) == added
    assert add_label_tokens(again, ["[[unsafe]]", "4", "[[safe]]"]) == []  # already one token each


def test_the_label_is_one_token_even_inside_text(tiny_model):
    tokenizer = _tokenizer(tiny_model)
    (label,) = add_label_tokens(tokenizer, ["[[unsafe]]"])
    assert label in tokenizer.encode("<|assistant|>\n[[unsafe]]</s>", add_special_tokens=False)


def test_new_embedding_rows_start_at_the_mean_of_the_old_ones(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    old = model.get_input_embeddings().weight.detach().clone()
    grow_embeddings(model, old.shape[0] + 2, [old.shape[0], old.shape[0] + 1])
    grown = model.get_input_embeddings().weight.detach()
    assert grown.shape[0] == old.shape[0] + 2
    assert torch.equal(grown[: old.shape[0]], old)
    assert torch.allclose(grown[-1], old.mean(dim=0), atol=1e-6) and torch.allclose(grown[-2], old.mean(dim=0))
    output = model.get_output_embeddings().weight.detach()
    if output.data_ptr() != grown.data_ptr():  # an untied output layer grows the same way
        assert torch.allclose(output[-1], output[:-2].mean(dim=0), atol=1e-6)
    targets = trainable_token_targets(model, [old.shape[0], old.shape[0] + 1])
    assert targets["embed_tokens"] == [old.shape[0], old.shape[0] + 1]
    assert trainable_token_targets(model, []) is None


def test_an_added_label_within_the_models_rows_starts_at_the_mean_too(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    old = model.get_input_embeddings().weight.detach().clone()
    grow_embeddings(model, 300, [300])  # fewer tokens than rows: the row is there, a padding row until now
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape == old.shape
    assert torch.allclose(weight[300], old[:300].mean(dim=0), atol=1e-6)
    assert torch.equal(weight[301:], old[301:]) and torch.equal(weight[:300], old[:300])


def test_a_lora_that_trains_the_embeddings_whole_gets_no_trainable_rows_of_them(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    everything = trainable_token_targets(model, [500])
    assert trainable_token_targets(model, [500], ("embed_tokens", "lm_head")) is None
    rest = {k: v for k, v in everything.items() if k != "embed_tokens"} or None
    assert trainable_token_targets(model, [500], ("embed_tokens",)) == rest
