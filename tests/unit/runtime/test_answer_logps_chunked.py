"""Preference tuning's answer log-probabilities without logits: where sft's loss is chunked (``TokenLoss.chunked``),
each answer's summed log-probability goes through ``linear_log_probs`` (only the answers' positions projected, chunk
by chunk) and equals the full logits' one, as does every parameter's gradient of a preference loss built on it
(full fine-tuning, tied embeddings, LoRA); where the loss takes the full logits, so do the answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftc.runtime.training import loss as loss_module
from ftc.runtime.training.loss import TokenLoss, linear_log_probs
from ftc.runtime.training.preference import Pairs, answer_logps, collate_pairs, preference_loss

from support.models import build_tiny_model
from support.preference import token_pairs

BETA = 0.5


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 7 * 512)  # 7 positions of the tiny vocabulary: many chunks


def _pairs(n: int = 4) -> Pairs:
    return token_pairs(n, seed=11)


def _model(tiny_model, tmp_path, kind: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tiny_model
    if kind == "tied":
        folder = build_tiny_model(tmp_path / "tied", tokenizer=False, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if kind == "tied":
        assert model.lm_head.weight is model.model.embed_tokens.weight
    if kind == "lora":  # B != 0: the adapter changes the answers, so its gradients are not zero
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    if kind == "lora-head":  # the output layer's trained copy: not a plain Linear, so full logits
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    return model


def _head_calls(token_loss: TokenLoss) -> list[int]:
    """Counts the output layer's own forward calls (the chunked path swaps it out and never calls it)."""
    calls: list[int] = []
    token_loss.model._modules["lm_head"].register_forward_hook(lambda *_: calls.append(1))
    return calls


def _loss_and_grads(model, token_loss, batch, reference, loss_type):
    k = reference.shape[0]
    model.zero_grad()
    logps, tokens = answer_logps(model, batch, "cpu", token_loss)
    losses, _, _ = preference_loss(
        (logps[:k], logps[k:]), (reference[:, 0], reference[:, 1]), (tokens[:k], tokens[k:]), beta=BETA,
        loss_type=loss_type,
    )  # fmt: skip
    (losses.sum() / k).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach(), tokens, grads


def test_the_chunked_answer_logps_and_token_counts_equal_the_full_logits(tiny_model, tmp_path, small_chunks):
    model = _model(tiny_model, tmp_path, "full").eval()
    pairs = _pairs()
    batch = collate_pairs(pairs, [2, 0, 3], pad_id=0)
    assert (batch.labels[:, -1] == -100).any()  # padded rows
    chunked, full = TokenLoss(model, zero_stage=2), TokenLoss(model, zero_stage=3)
    assert chunked.chunked and not full.chunked
    calls = _head_calls(chunked)
    with torch.no_grad():  # as the reference pass and an evaluation take them
        got, got_tokens = answer_logps(model, batch, "cpu", chunked)
        assert calls == []  # no logits: the output layer never ran
        want, want_tokens = answer_logps(model, batch, "cpu", full)
        assert calls == [1]
    assert got.dtype == torch.float32 and got.shape == (6,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert torch.equal(got_tokens, want_tokens)
    trained = [int(pairs.chosen.trainable[i].sum()) for i in (2, 0, 3)]
    trained += [int(pairs.rejected.trainable[i].sum()) for i in (2, 0, 3)]
    assert got_tokens.tolist() == trained  # each answer's own tokens, the row's first never predicted


@pytest.mark.parametrize(
    ("kind", "loss_type"), [("full", "sigmoid"), ("full", "ipo"), ("tied", "sigmoid"), ("lora", "sigmoid")]
)
def test_every_gradient_of_a_preference_loss_equals_the_full_logits(
    tiny_model, tmp_path, small_chunks, kind, loss_type
):
    model = _model(tiny_model, tmp_path, kind).train()
    batch = collate_pairs(_pairs(), [1, 3, 0, 2], pad_id=0)
    reference = torch.as_tensor(np.random.default_rng(2).normal(-20.0, 4.0, size=(4, 2)), dtype=torch.float32)
    chunked = TokenLoss(model, zero_stage=0)
    assert chunked.chunked
    got, got_tokens, got_grads = _loss_and_grads(model, chunked, batch, reference, loss_type)
    want, want_tokens, want_grads = _loss_and_grads(model, TokenLoss(model, zero_stage=3), batch, reference, loss_type)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert torch.equal(got_tokens, want_tokens)
    assert sorted(got_grads) == sorted(want_grads)
    scale = max(g.abs().max().item() for g in want_grads.values())
    for name, grad in want_grads.items():
        assert grad.abs().max() > 0, f"{name}: no gradient to compare"
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize("where", ["zero-3", "adapted output layer"])
def test_the_answers_take_the_full_logits_where_the_loss_does(tiny_model, tmp_path, where):
    model = _model(tiny_model, tmp_path, "lora-head" if where == "adapted output layer" else "full")
    token_loss = TokenLoss(model, zero_stage=3 if where == "zero-3" else 0)
    assert not token_loss.chunked
    calls = _head_calls(token_loss)
    batch = collate_pairs(_pairs(), [0, 1], pad_id=0)
    logps, _ = answer_logps(model, batch, "cpu", token_loss)
    assert calls == [1]  # the output layer itself gave the logits
    logps.sum().backward()
    head = token_loss.model._modules["lm_head"]
    trained_head = [p for p in head.parameters() if p.requires_grad]
    assert trained_head and all(p.grad is not None and p.grad.abs().max() > 0 for p in trained_head)


@pytest.mark.parametrize("weight_trainable", [True, False])
def test_linear_log_probs_equal_the_rows_summed_log_softmax(small_chunks, weight_trainable):
    torch.manual_seed(0)
    hidden = torch.randn(3, 20, 16, requires_grad=True)
    weight = (torch.randn(512, 16) * 0.3).requires_grad_(weight_trainable)
    labels = torch.randint(0, 512, (3, 20))
    labels[:, :6] = -100  # a prompt
    labels[1] = -100  # a row without a labelled token: its sum is 0
    labels[2, 15:] = -100  # padding
    labels[0, 19] = -100  # 13 labelled positions, then row 2's 9: a chunk of 7 holds both rows' positions
    per_token = torch.log_softmax(hidden @ weight.T, dim=-1).gather(2, labels.clamp(min=0)[..., None]).squeeze(2)
    expected = (per_token * (labels != -100)).sum(dim=1)
    row_weights = torch.tensor([0.7, -1.3, 2.0])  # each row's own gradient, as a preference loss gives them
    (expected * row_weights).sum().backward()
    want_hidden, want_weight = hidden.grad.clone(), None if weight.grad is None else weight.grad.clone()
    hidden.grad = weight.grad = None

    rows = torch.from_numpy(np.flatnonzero(labels.reshape(-1).numpy() != -100))
    for given in (rows, None):  # the positions as a batch brings them, or found here
        got = linear_log_probs(hidden, weight, labels, given)
        (got * row_weights).sum().backward()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert got[1] == 0
        torch.testing.assert_close(hidden.grad, want_hidden, rtol=1e-5, atol=1e-6)
        assert hidden.grad[:, :6].abs().max() == 0 and hidden.grad[1].abs().max() == 0  # unlabelled: no gradient
        if weight_trainable:
            torch.testing.assert_close(weight.grad, want_weight, rtol=1e-5, atol=1e-6)
        else:
            assert weight.grad is None
        hidden.grad = weight.grad = None
