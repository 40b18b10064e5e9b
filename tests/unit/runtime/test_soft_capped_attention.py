"""Gemma 2 soft-caps its attention scores: ftc's per-sample kernel computes them as transformers' eager attention
does, packed samples still attend only to themselves, and the kernel is chosen for such weights by itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ftc.runtime.training.model import load_model

from support.models import build_tiny_gemma2


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    # larger random weights and a low cap, so that capping bends the scores (a tiny random model's are near 0)
    return build_tiny_gemma2(
        tmp_path_factory.mktemp("gemma2") / "model", attn_logit_softcapping=1.0, initializer_range=0.3
    )


def _load(path, attention, **config):
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register

    register()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention, **config)


def test_packed_gemma2_samples_get_the_logits_eager_attention_gives_each_alone(gemma2):
    model, eager = _load(gemma2, "varlen_softcap").eval(), _load(gemma2, "eager").eval()
    torch.manual_seed(1)
    a, b = torch.randint(3, 512, (1, 7)), torch.randint(3, 512, (1, 40))  # b is longer than the sliding window
    packed = {"input_ids": torch.cat([a, b], 1), "position_ids": torch.cat([torch.arange(7), torch.arange(40)])[None]}
    with torch.no_grad():
        got = model(**packed, use_cache=False).logits[0]
        for alone, at in ((a, slice(0, 7)), (b, slice(7, 47))):
            assert torch.allclose(got[at], eager(input_ids=alone, use_cache=False).logits[0], atol=1e-5)
        # the soft-capping is applied: without it the scores, and so the logits, differ
        uncapped = _load(gemma2, "eager", attn_logit_softcapping=None).eval()
        assert not torch.allclose(got[7:], uncapped(input_ids=b, use_cache=False).logits[0], atol=1e-3)


def test_the_per_sample_kernel_trains_gemma2_like_eager_attention(gemma2):
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    grads = {}
    for attention in ("eager", "varlen_softcap"):
        model = _load(gemma2, attention)
        logits = model(input_ids=ids, use_cache=False).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 512), ids[:, 1:].reshape(-1)).backward()
        grads[attention] = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads["eager"].items():
        assert torch.allclose(grads["varlen_softcap"][name], g, atol=1e-5), name


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        ("sdpa_varlen", "varlen_softcap"),  # the CPU default
        ("sdpa", "eager"),  # the GPU default: transformers refuses SDPA for Gemma 2
        ("eager", "eager"),
    ],
)
def test_soft_capped_weights_load_with_a_kernel_that_caps(gemma2, asked, used):
    spec = SimpleNamespace(
        activation_checkpointing=False,
        resize_token_embeddings=False,
        rope_scaling=None,
        model_id="ftc-tests/gemma2",
        classifier_config=None,
    )
    loaded = load_model(spec, "full", gemma2, None, dtype=torch.float32, attention=asked)
    assert loaded.model.config._attn_implementation == used


def test_other_weights_keep_the_kernel_asked_for(tiny_model):
    spec = SimpleNamespace(
        activation_checkpointing=False,
        resize_token_embeddings=False,
        rope_scaling=None,
        model_id="ftc-tests/llama",
        classifier_config=None,
    )
    loaded = load_model(spec, "full", tiny_model, None, dtype=torch.float32, attention="sdpa_varlen")
    assert loaded.model.config._attn_implementation == "sdpa_varlen"


def test_a_model_trained_with_the_per_sample_kernel_decodes_as_transformers_greedy_search(gemma2):
    # serving and evaluation decode the model as trained: its kernel, or what stands in for it while decoding
    from transformers import AutoTokenizer

    from ftc.runtime.training.generation import Sampling, generate

    model, eager = _load(gemma2, "varlen_softcap").eval(), _load(gemma2, "eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(gemma2)
    prompt = tokenizer("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    ours = generate(model, tokenizer, prompt, stop_texts=[], stop_ids=[], sampling=Sampling(max_new_tokens=8))
    theirs = eager.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert ours.tokens == 8 and model.config._attn_implementation == "varlen_softcap"
    assert ours.text == tokenizer.decode(theirs[0, len(prompt) :].tolist())
