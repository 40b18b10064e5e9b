"""The chat template written for serving renders exactly what training tokenized: the same text for any format and
conversation (property test), and the same token ids over every example the project ships, for several formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftc.runtime.training.chat_template import chat_template, stop_texts
from ftc.runtime.training.render import render_prompt_format
from ftc.runtime.training.tokens import tokenize_file
from ftc.spec import PromptFormat

from conftest import REPO
from support.models import PROMPT_FORMATS, arithmetic_examples, write_jsonl

#: the formats the exported template is checked with, token for token
FORMATS = {name: PromptFormat(**fields) for name, fields in PROMPT_FORMATS.items()}


def _data_files() -> list[Path]:
    return sorted(REPO.glob("examples/*/data/*.jsonl"))


def _conversations(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_every_example_data_file_is_checked():
    assert {p.parent.parent.name for p in _data_files()} >= {
        "quickstart",
        "seed-continue-from-checkpoint",
        "smollm2-arithmetic",
    }


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("data", _data_files(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_exported_template_gives_the_very_tokens_training_used(name, data, tokenizer):
    fmt = FORMATS[name]
    examples, bad = tokenize_file(data, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer,
                                  cache_file=None)  # fmt: skip
    assert bad == [] and len(examples) == len(_conversations(data))
    template = chat_template(fmt)
    for messages, trained in zip(_conversations(data), examples.ids):
        served = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=False)
        assert served == trained.tolist()
        # the generation prompt: the conversation up to its last answer, then trailing_assistant
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(
            messages[:last], chat_template=template, tokenize=False, add_generation_prompt=True
        )
        assert prompt == render_prompt_format(messages[:last], fmt).text + fmt.trailing_assistant


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_same_over_the_tests_data_with_system_messages(name, tokenizer, tmp_path):
    fmt = FORMATS[name]
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_examples(100, seed=3, system=" You add numbers. "))
    examples, _ = tokenize_file(data, render=lambda m: render_prompt_format(m, fmt), tokenizer=tokenizer,
                                cache_file=None)  # fmt: skip
    template = chat_template(fmt)
    for messages, trained in zip(_conversations(data), examples.ids):
        served = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=False)
        assert served == trained.tolist()


def test_the_tokenizers_own_template_is_what_training_rendered(tokenizer, tmp_path):
    from ftc.runtime.training.render import render_chat_template

    data = REPO / "examples" / "quickstart" / "data" / "valid.jsonl"
    examples, _ = tokenize_file(data, render=lambda m: render_chat_template(m, tokenizer), tokenizer=tokenizer,
                                cache_file=None)  # fmt: skip
    for messages, trained in zip(_conversations(data), examples.ids):
        assert tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False) == trained.tolist()


_PIECES = list("ab \n\t{}%#'\"\\") + ["{instruction}", "{system}", "{{", "{%", "😀", "é", "\x01"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@st.composite
def _format_and_messages(draw):
    fmt = PromptFormat(
        system=draw(_TEXT) + "{instruction}" + draw(_TEXT),
        user=draw(_TEXT) + ("{system}" if draw(st.booleans()) else "") + "{instruction}" + draw(_TEXT),
        assistant=draw(_TEXT) + "{instruction}" + draw(_TEXT),
        trailing_assistant=draw(_TEXT),
        bos=draw(st.sampled_from(["", "<s>"])),
        system_in_user=draw(st.booleans()),
        default_system_message=draw(_TEXT),
        add_system_tags_even_if_message_is_empty=draw(st.booleans()),
        strip_whitespace=draw(st.booleans()),
    )
    messages = [{"role": "system", "content": draw(_TEXT)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(_TEXT)}, {"role": "assistant", "content": draw(_TEXT) + "x"}]
    return fmt, messages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_format_and_messages())
def test_template_renders_any_format_as_training_does(tokenizer, case):
    fmt, messages = case
    template = chat_template(fmt)
    rendered = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert rendered == render_prompt_format(messages, fmt).text
    prompt = tokenizer.apply_chat_template(
        messages[:-1], chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert prompt == render_prompt_format(messages[:-1], fmt).text + fmt.trailing_assistant


def test_strip_whitespace_and_empty_system_messages_follow_the_seed_format():
    fmt = PromptFormat(system="[S]{instruction}[/S]", user="[U]{instruction}[/U]", assistant="[A]{instruction}[/A]")
    messages = [{"role": "user", "content": "  hi \n"}, {"role": "assistant", "content": " 4 "}]
    assert render_prompt_format(messages, fmt).text == "[U]hi[/U][A]4[/A]"  # stripped; no system tags
    assert render_prompt_format([{"role": "system", "content": "  "}, *messages], fmt).text == "[U]hi[/U][A]4[/A]"
    tags = PromptFormat(**{**vars(fmt), "add_system_tags_even_if_message_is_empty": True, "strip_whitespace": False})
    assert render_prompt_format(messages, tags).text == "[S][/S][U]  hi \n[/U][A] 4 [/A]"
    rendered = render_prompt_format(messages, tags)
    assert [rendered.text[a:b] for a, b in rendered.loss_spans] == [" 4 [/A]"]


def test_a_placeholder_inside_a_message_is_text_not_a_slot():
    fmt = PromptFormat(user="[INST] {system}{instruction} [/INST]", assistant="{instruction}", system_in_user=True)
    messages = [
        {"role": "system", "content": "say {instruction}"},
        {"role": "user", "content": "{system}"},
        {"role": "assistant", "content": "ok"},
    ]
    assert render_prompt_format(messages, fmt).text == "[INST] say {instruction}{system} [/INST]ok"


def test_stop_texts_are_the_stopping_sequences_then_the_end_of_the_assistant_turn():
    assert stop_texts(FORMATS["quickstart"], ()) == ["</s>"]
    assert stop_texts(FORMATS["llama2-system-in-user"], ("</s>", "[INST]")) == ["</s>", "[INST]"]
    assert stop_texts(PromptFormat(user="{instruction}", assistant="{instruction}"), ()) == []
    assert stop_texts(None, ("###",)) == ["###"]
