"""Rendering and loss masks, token by token: the seed guide's prompt format and a tokenizer's chat template."""

from __future__ import annotations

import pytest

from ftc.runtime.training.batches import IGNORE, collate
from ftc.runtime.training.render import render_chat_template, render_prompt_format, renderer_for
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from support.models import PROMPT_FORMAT, write_jsonl


def _fmt(**kw) -> PromptFormat:
    return PromptFormat(**{"user": "{instruction}", "assistant": "{instruction}", **kw})


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _trained_text(tokenizer, path, render):
    examples, bad = tokenize_file(path, render=render, tokenizer=tokenizer, cache_file=None)
    assert bad == []
    ids, mask = examples.ids[0], examples.trainable[0]
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    return tokenizer.decode(ids[mask]), tokens, mask


def test_llama_guard_mapping_of_the_seed_guide(tmp_path, tokenizer):
    # the whole prompt as the system message, an empty user message, "safe"/"unsafe" as the assistant's answer
    prompt = "[INST] Task: Check if there is unsafe content in 'Agent' messages... [/INST]"
    messages = [
        {"role": "system", "content": prompt},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "unsafe"},
    ]
    fmt = _fmt(bos="<s>")
    rendered = render_prompt_format(messages, fmt)
    assert rendered.text == "<s>" + prompt + "unsafe"
    assert rendered.loss_spans == ((len("<s>") + len(prompt), len(rendered.text)),)
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])
    trained, tokens, mask = _trained_text(tokenizer, path, lambda m: render_prompt_format(m, fmt))
    assert trained == "unsafe"
    assert tokens[0] == "<s>" and not mask[0]
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids(tokens)[: int(mask.argmax())]) == "<s>" + prompt


def test_prompt_format_with_role_templates_trains_on_answer_and_end_of_turn(tmp_path, tokenizer):
    fmt = _fmt(**PROMPT_FORMAT)
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5"}]
    rendered = render_prompt_format(messages, fmt)
    assert rendered.text == "<s><|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n2 + 3 = 5</s>\n"
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])
    trained, tokens, mask = _trained_text(tokenizer, path, lambda m: render_prompt_format(m, fmt))
    assert trained == "2 + 3 = 5</s>\n"
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert (
        tokenizer.decode([i for i, m in zip(ids, mask) if not m]) == "<s><|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n"
    )
    assert not mask[: int(mask.argmax())].any() and mask[int(mask.argmax()) :].all()  # one contiguous answer at the end


def test_default_system_message_and_system_in_user():
    fmt = _fmt(
        system="<<SYS>>{instruction}<</SYS>>",
        user="[INST] {system}{instruction} [/INST]",
        assistant=" {instruction} </s>",
        bos="<s>",
        system_in_user=True,
        default_system_message="Be brief.",
    )
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    rendered = render_prompt_format(messages, fmt)
    assert rendered.text == "<s>[INST] <<SYS>>Be brief.<</SYS>>hi [/INST] hello </s>[INST] bye [/INST] ciao </s>"
    assert [rendered.text[a:b] for a, b in rendered.loss_spans] == ["hello </s>", "ciao </s>"]


def test_literal_braces_in_templates_are_kept():
    fmt = _fmt(system="Check '{{ role }}' messages: {instruction}")
    assert (
        render_prompt_format([{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}], fmt).text
        == "Check '{{ role }}' messages: xy"
    )


def test_chat_template_masks_each_assistant_turn(tmp_path, tokenizer):
    messages = [
        {"role": "system", "content": "You add."},
        {"role": "user", "content": "1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    rendered = render_chat_template(messages, tokenizer)
    assert (
        rendered.text == "<s><|system|>\nYou add.</s>\n<|user|>\n1 + 1?</s>\n<|assistant|>\n2</s>\n"
        "<|user|>\n2 + 2?</s>\n<|assistant|>\n4</s>\n"
    )
    # the chat template's assistant span starts after the generation prompt
    assert [rendered.text[a:b] for a, b in rendered.loss_spans] == ["2</s>\n", "4</s>\n"]
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])
    examples, _ = tokenize_file(path, render=renderer_for(None, tokenizer), tokenizer=tokenizer, cache_file=None)
    ids, mask = examples.ids[0], examples.trainable[0]
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert [t for t, m in zip(tokens, mask) if m] == tokenizer.convert_ids_to_tokens(
        tokenizer("2</s>\n4</s>\n", add_special_tokens=False).input_ids
    )


def test_labels_are_the_trained_tokens_and_nothing_else(tmp_path, tokenizer):
    fmt = _fmt(**PROMPT_FORMAT)
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    )
    examples, _ = tokenize_file(
        path, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer, cache_file=None
    )
    batch = collate([(0,)], examples, pad_id=0, packed=False, pad_to=32)
    labels = batch.labels[0]
    ids = batch.inputs["input_ids"][0]
    n = len(examples.ids[0])
    assert (labels[n:] == IGNORE).all() and (batch.inputs["attention_mask"][0][n:] == 0).all()
    trained = labels[labels != IGNORE]
    assert tokenizer.decode(trained) == "b</s>\n"
    assert (ids[:n][examples.trainable[0]] == trained).all()


def test_a_chat_template_that_rewrites_earlier_turns_is_refused(tiny_model):
    from transformers import AutoTokenizer

    from ftc.errors import DataInvalid

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = (
        "{% for m in messages[-2:] %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"  # a sliding window
    )
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    with pytest.raises(DataInvalid, match="does not render conversations incrementally"):
        render_chat_template(messages, tokenizer)


def test_no_prompt_format_and_no_chat_template_is_an_error(tiny_model):
    from transformers import AutoTokenizer

    from ftc.errors import DataInvalid

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = None
    with pytest.raises(DataInvalid, match="no generation_config.prompt_format and the tokenizer has no chat template"):
        renderer_for(None, tokenizer)


# ---- masks on token boundaries: the token that carries the answer is trained however the template spaces it --------

GUARD = [
    {"role": "user", "content": "Is 'how do I bake bread' safe?"},
    {"role": "assistant", "content": "safe"},
]


_GUARD_CORPUS = ["Is 'how do I bake bread' safe? safe unsafe safe unsafe", "[INST] question [/INST] safe </s>"] * 50


def _byte_level_tokenizer(folder):
    """A GPT-2-style (byte-level BPE) tokenizer, as SmolLM2's or Llama 3's: ' safe' is one token, space included."""
    from support.models import build_tokenizer

    tokenizer = build_tokenizer(folder, vocab_size=300, corpus=_GUARD_CORPUS)
    assert "Ġsafe" in tokenizer.get_vocab()
    return tokenizer


def _sentencepiece_style_tokenizer(folder):
    """A Llama-style (SentencePiece) tokenizer: spaces become '▁' glued to the next word, as in Llama 2 or Mistral."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(_GUARD_CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def _answer_tokens_trained(tokenizer, tmp_path, fmt) -> tuple[str, list[str]]:
    """The trained text, and the tokens that hold a character of the answer "safe" with whether each is trained."""
    path = write_jsonl(tmp_path / "guard.jsonl", [{"messages": GUARD}])
    render = lambda m: render_prompt_format(m, fmt)  # noqa: E731
    examples, bad = tokenize_file(path, render=render, tokenizer=tokenizer, cache_file=None)
    assert bad == []
    rendered = render(GUARD)
    answer = rendered.text.rindex("safe")
    offsets = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ids, mask = examples.ids[0], examples.trainable[0]
    holding = [i for i, (s, e) in enumerate(offsets) if s < answer + 4 and e > answer]
    assert holding, "no token holds the answer"
    return tokenizer.decode(ids[mask]), [(rendered.text[offsets[i][0] : offsets[i][1]], bool(mask[i])) for i in holding]


@pytest.mark.parametrize("space", ["", " "], ids=["no space", "a leading space"])
@pytest.mark.parametrize("kind", ["byte-level BPE", "SentencePiece-style"])
def test_the_answer_token_is_trained_with_or_without_a_space_before_it(tmp_path, kind, space):
    if kind == "SentencePiece-style":
        tokenizer = _sentencepiece_style_tokenizer(tmp_path / "sp")
    else:
        tokenizer = _byte_level_tokenizer(tmp_path / "bpe")
    fmt = _fmt(user="[INST] {instruction} [/INST]", assistant=space + "{instruction}</s>")
    trained, holding = _answer_tokens_trained(tokenizer, tmp_path, fmt)
    assert all(is_trained for _, is_trained in holding), holding  # ` safe` or `▁safe` too, not only `</s>`
    assert "safe" in trained and trained.rstrip().endswith("</s>")


def test_the_answer_token_is_trained_through_a_chat_template_with_a_space(tmp_path):
    tokenizer = _byte_level_tokenizer(tmp_path / "bpe")
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}"
    )
    path = write_jsonl(tmp_path / "guard.jsonl", [{"messages": GUARD}])
    render = renderer_for(None, tokenizer)
    examples, bad = tokenize_file(path, render=render, tokenizer=tokenizer, cache_file=None)
    assert bad == []
    trained = tokenizer.convert_ids_to_tokens(examples.ids[0][examples.trainable[0]].tolist())
    assert trained[0] == "Ġsafe", trained  # the answer's token, space and all
