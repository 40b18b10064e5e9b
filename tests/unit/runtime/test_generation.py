"""Generation as serving does it, on the real tiny model: greedy equals transformers' own greedy search, sampling
repeats with its seed, a stop text ends the answer and never reaches the stream, and the streamed pieces are the
answer."""

from __future__ import annotations

import pytest

from ftc.runtime.training.generation import Sampling, exact_match, generate, stop_token_ids


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


PROMPT = "<s><|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n"


def _run(model_and_tokenizer, sampling, stop_texts=(), on_text=None):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    return generate(model, tokenizer, ids, stop_texts=list(stop_texts), stop_ids=stop_token_ids(tokenizer, []),
                    sampling=sampling, on_text=on_text)  # fmt: skip


def test_greedy_is_transformers_greedy_search(model_and_tokenizer):
    import torch

    model, tokenizer = model_and_tokenizer
    result = _run(model_and_tokenizer, Sampling(max_new_tokens=12))
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    theirs = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    new = theirs[0, ids.shape[1] :].tolist()
    new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
    assert result.text == tokenizer.decode(new)
    assert result.tokens == len(new)


def test_sampling_repeats_with_its_seed(model_and_tokenizer):
    runs = [_run(model_and_tokenizer, Sampling(max_new_tokens=16, temperature=1.5, seed=s)).text for s in (1, 1, 2, 3)]
    assert runs[0] == runs[1]
    assert len(set(runs)) > 1  # a random tiny model at temperature 1.5: other seeds, other answers
    top = _run(model_and_tokenizer, Sampling(max_new_tokens=16, temperature=1.5, top_p=1e-6, seed=5)).text
    assert top == _run(model_and_tokenizer, Sampling(max_new_tokens=16)).text  # top_p -> 0: the greedy choice


def test_a_stop_text_ends_the_answer_and_is_never_streamed(model_and_tokenizer):
    free = _run(model_and_tokenizer, Sampling(max_new_tokens=24, temperature=1.0, seed=7)).text
    assert len(free) > 4
    stop = free[2:4]  # text the model is going to produce
    pieces: list[str] = []
    stopped = _run(
        model_and_tokenizer, Sampling(max_new_tokens=24, temperature=1.0, seed=7), [stop], on_text=pieces.append
    )
    assert stopped.finish_reason == "stop" and stopped.text == free[: free.index(stop)]
    assert "".join(pieces) == stopped.text and stop not in "".join(pieces)
    pieces = []
    whole = _run(model_and_tokenizer, Sampling(max_new_tokens=24, temperature=1.0, seed=7), on_text=pieces.append)
    assert "".join(pieces) == whole.text == free and len(pieces) > 1  # streamed piece by piece


def test_exact_match_ignores_whitespace_only():
    assert exact_match("  2 + 3\n=  5 ", "2 + 3 = 5")
    assert not exact_match("2+3=5", "2 + 3 = 5")
    assert not exact_match("Safe", "safe")
