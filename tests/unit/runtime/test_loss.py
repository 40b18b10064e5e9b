"""The chunked loss gives the textbook loss and gradients, and is used only where it is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ftc.runtime.training import loss as loss_module
from ftc.runtime.training.loss import TokenLoss, linear_cross_entropy

from support.models import build_tiny_model, reference_loss_sum


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 7 * 97)  # 7 rows of a 97-token vocabulary: many uneven chunks


@pytest.mark.parametrize("weight_trainable", [True, False])
def test_loss_and_gradients_equal_full_logits_cross_entropy(small_chunks, weight_trainable):
    torch.manual_seed(0)
    hidden = torch.randn(60, 16, requires_grad=True)
    weight = (torch.randn(97, 16) * 0.3).requires_grad_(weight_trainable)
    labels = torch.randint(0, 97, (60,))
    labels[::4] = -100
    expected = F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction="sum")
    (expected * 0.25).backward()
    want_hidden, want_weight = hidden.grad.clone(), None if weight.grad is None else weight.grad.clone()
    hidden.grad = weight.grad = None

    got = linear_cross_entropy(hidden, weight, labels)
    (got * 0.25).backward()
    assert torch.allclose(got, expected, rtol=1e-5)
    assert torch.allclose(hidden.grad, want_hidden, atol=1e-6)
    assert hidden.grad[::4].abs().max() == 0  # unlabelled positions get no gradient
    if weight_trainable:
        assert torch.allclose(weight.grad, want_weight, atol=1e-5)
    else:
        assert weight.grad is None


def test_no_labelled_token_gives_zero_loss_and_zero_gradient():
    hidden = torch.randn(5, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, torch.randn(11, 8), torch.full((5,), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().max() == 0


def _batch(vocab: int):
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (2, 24))
    labels = ids.clone()
    labels[:, :10] = -100  # the prompt
    labels[1, 20:] = -100  # padding
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


@pytest.mark.parametrize("tied", [False, True])
def test_token_loss_of_a_model_matches_its_logits(tmp_path, small_chunks, tied):
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path / "m", vocab_size=97, tokenizer=False, tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs, labels = _batch(97)
    expected = model(**inputs, use_cache=False).logits
    reference = F.cross_entropy(
        expected[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )
    reference.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    token_loss = TokenLoss(model, zero_stage=2)
    assert token_loss.chunked
    loss = token_loss(model, inputs, labels)  # the model stands in for the DeepSpeed engine: same call
    loss.backward()
    assert abs(loss.item() - reference_loss_sum(expected.detach(), labels)) < 1e-4
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, want[name], atol=1e-5), name
    assert type(model.lm_head) is torch.nn.Linear  # the output layer is back in place


def test_lora_model_uses_the_chunked_loss_and_its_gradients_match(tmp_path, small_chunks):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path / "m", vocab_size=97, tokenizer=False)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    )
    inputs, labels = _batch(97)
    logits = model(**inputs, use_cache=False).logits
    F.cross_entropy(
        logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    ).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    token_loss = TokenLoss(model, zero_stage=0)
    assert token_loss.chunked
    token_loss(model, inputs, labels).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, want[name], atol=1e-5), name


def test_full_logits_where_chunking_would_not_be_exact(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    folder = build_tiny_model(tmp_path / "m", vocab_size=97, tokenizer=False)
    llama = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert TokenLoss(llama, zero_stage=3).reason == "full logits (ZeRO stage 3)"
    adapted_head = get_peft_model(llama, LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    assert TokenLoss(adapted_head, zero_stage=0).reason == "full logits (the output layer is adapted or has a bias)"
    gpt2 = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=97, bos_token_id=0, eos_token_id=0)
    ).eval()
    token_loss = TokenLoss(gpt2, zero_stage=0)
    assert token_loss.reason == "full logits (model type 'gpt2')"
    inputs, labels = _batch(97)
    with torch.no_grad():
        expected = reference_loss_sum(gpt2(**inputs).logits, labels)
        assert abs(token_loss(gpt2, inputs, labels).item() - expected) < 1e-4


def test_deepspeed_sets_up_its_backward_before_the_output_layer_gets_a_gradient(tmp_path, monkeypatch):
    # DeepSpeed hooks its backward set-up (ZeRO's gradient bookkeeping, the accumulation boundary) on what the
    # engine's forward returns; the chunked loss computes the output layer's gradient itself, so the loss must be
    # that output, or the output layer's gradient arrives before the set-up
    import deepspeed
    import deepspeed.ops
    from transformers import AutoModelForCausalLM

    from support.servers import free_ports

    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_ports(1)[0]),
    }.items():
        monkeypatch.setenv(key, value)
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    model = AutoModelForCausalLM.from_pretrained(
        build_tiny_model(tmp_path / "m", vocab_size=97, tokenizer=False), dtype=torch.float32
    )
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "zero_optimization": {"stage": 1}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=config)
    order = []
    prologue = engine._backward_prologue
    monkeypatch.setattr(engine, "_backward_prologue", lambda: (order.append("set-up"), prologue())[1])
    model.lm_head.weight.register_post_accumulate_grad_hook(lambda p: order.append("output layer"))
    inputs, labels = _batch(97)
    token_loss = TokenLoss(engine.module, zero_stage=1)
    assert token_loss.chunked
    engine.backward(token_loss(engine, inputs, labels))
    assert order[:2] == ["set-up", "output layer"]
