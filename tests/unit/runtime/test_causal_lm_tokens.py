"""task: causal_lm trains every token: conversations (with or without an answer) rendered as for instruction
tuning, and {"text": ...} lines tokenized as the tokenizer encodes text with its EOS appended; the loss of a batch
covers every token that is not padding (all but each example's first, which nothing before it predicts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ftc.runtime.training.batches import IGNORE, collate
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat
from ftc.spec.chat_data import check_chat_jsonl

from support.models import PROMPT_FORMAT

LINES = [
    {"messages": [{"role": "user", "content": "What is 2 + 3?"}]},  # no answer: fine for causal_lm
    {"text": "1 + 1 = 2. 2 + 2 = 4."},
    {"messages": [{"role": "user", "content": "What is 4 + 4?"}, {"role": "assistant", "content": "4 + 4 = 8"}]},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _file(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _render(messages):
    return render_prompt_format(messages, PromptFormat(**PROMPT_FORMAT))


def test_every_token_of_every_example_is_marked_trained(tmp_path, tokenizer):
    examples, bad = tokenize_file(
        _file(tmp_path, LINES), render=_render, tokenizer=tokenizer, cache_file=None, task="causal_lm"
    )
    assert bad == [] and examples.lines == [1, 2, 3]
    assert all(m.all() for m in examples.trainable)
    text_ids = examples.ids[1]
    assert text_ids[-1] == tokenizer.eos_token_id  # the document ends, so packed documents stay apart
    assert list(text_ids[:-1]) == tokenizer(LINES[1]["text"])["input_ids"]  # the tokenizer's own encoding

    batch = collate([(0,), (1,), (2,)], examples, pad_id=tokenizer.pad_token_id, packed=False)
    assert batch.real_tokens == int(examples.lengths.sum()) < batch.labels.numel()  # padded
    assert batch.loss_tokens == batch.real_tokens - len(examples)  # all but each example's first token
    trained = batch.labels != IGNORE
    assert int(trained.sum()) == batch.real_tokens - len(examples)
    assert not trained[batch.inputs["attention_mask"] == 0].any()  # never the padding


def test_instruction_tuning_of_the_same_file_trains_only_answers_and_refuses_what_it_cannot_use(tmp_path, tokenizer):
    examples, bad = tokenize_file(_file(tmp_path, LINES), render=_render, tokenizer=tokenizer, cache_file=None)
    assert [b.line for b in bad] == [1, 2] and examples.lines == [3]
    assert 0 < examples.trainable[0].sum() < len(examples.ids[0])


def test_a_line_of_neither_form_is_named_with_its_line(tmp_path):
    path = _file(tmp_path, [*LINES, {"prompt": "x"}, {"text": "  "}, {"text": 3}])
    report = check_chat_jsonl(path, "causal_lm")
    assert report.records == 3
    assert report.bad == (
        (4, 'neither "messages" (a chat example) nor "text" (a text example)'),
        (5, '"text" is empty (nothing to learn from)'),
        (6, '"text" is not a string'),
    )
    assert np.array_equal([b[0] for b in check_chat_jsonl(path).bad], [1, 2, 4, 5, 6])
