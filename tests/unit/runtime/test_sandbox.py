"""Chat templates render in ftc's bounded sandbox: exactly the text transformers' ``apply_chat_template`` renders
for real templates, and a hostile template (endless loops, huge strings, recursion, escapes from the sandbox) stops
in about a second with a clear error naming it, instead of running for minutes or taking all memory."""

from __future__ import annotations

import time

import pytest

from ftc.errors import DataInvalid, ExitCode
from ftc.runtime.training.chat_template import chat_template
from ftc.runtime.training.sandbox import TemplateRefused, render_template
from ftc.spec import PromptFormat

from support.models import PROMPT_FORMAT

#: real templates, one of each kind (ChatML, Llama 3, Mistral, Qwen's namespaces and tojson, transformers'
#: {% generation %} marks, whitespace control and loop controls)
TEMPLATES = {
    "chatml": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
    "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_"
    "start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_"
    "prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "llama3": "{{- bos_token }}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]["
    "'content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n"
    '{%- endif %}\n{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n{{- system_message }}\n{{- "<|eot_id'
    "|>\" }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n"
    "\\n'+ message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|st"
    "art_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message["
    "'content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ message['content'] ~ '\n' }}{% endif %}{% endfor %}",
    "qwen": "{%- set ns = namespace(last=messages|length - 1) %}{%- for message in messages[::-1] %}{%- set index = "
    "(messages|length - 1) - loop.index0 %}{%- if message.role == 'user' and ns.last == messages|length - 1 %}{%- set "
    "ns.last = index %}{%- endif %}{%- endfor %}{%- for message in messages %}{{- '<|im_start|>' + message.role + "
    "'\\n' + message.content | trim + '<|im_end|>\\n' }}{%- if loop.index0 == ns.last %}{{ '<!-- last query -->' }}"
    "{% endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}{{ {'a': 1, "
    "'b': [1, 2]} | tojson(indent=2) }}{{ dict(x=1) | tojson }}{{ range(3) | list | join(', ') }}{{ 'x' * 3 }}{{ '%s-"
    "%d' % ('a', 2) }}{{ '{}!'.format('hi') }}{{ messages|map(attribute='role')|join('/') }}",
    "generation": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}"
    "{% endgeneration %}{% else %}<{{ m.role }}>{{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<assistant>{% endif %}",
    "controls": "  {% for m in messages -%}\n   [{{ loop.index }}/{{ loop.length }}] {{ m.role | upper }}: {{ m.conten"
    "t | replace('a', 'A') | center(20) }}\n{% if loop.last %}LAST{% endif %}\n  {%- endfor %}\n{% set x %}block {{ "
    "messages|length }}{% endset %}{{ x ~ '!' ~ 3 }}{% macro f(a) %}<{{ a }}>{% endmacro %}{{ f('m') }}{% for k, v in "
    "{'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}{% for i in range(10) %}{% if i > 2 %}{% break %}{% endif %}{{ i }}"
    "{% endfor %}{{ thinking is defined }}{% for m in messages %}{{ m.reasoning_content | default('') }}{% endfor %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "hi a"}],
    [
        {"role": "system", "content": " be brief "},
        {"role": "user", "content": "What is 12 + 7?"},
        {"role": "assistant", "content": "19"},
        {"role": "user", "content": "and 1 + 1?"},
        {"role": "assistant", "content": "2", "name": None},
    ],
    [{"role": "user", "content": "x\n\ty"}, {"role": "assistant", "content": "y", "reasoning": "I think"}],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _with_template(tokenizer, template: str):
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("name", [*TEMPLATES, "tiny model's own", "ftc's prompt_format"])
def test_real_templates_render_exactly_what_transformers_renders(tokenizer, name):
    own = tokenizer.chat_template
    template = {
        "tiny model's own": own,
        "ftc's prompt_format": chat_template(PromptFormat(**PROMPT_FORMAT)),
    }.get(name) or TEMPLATES[name]
    try:
        _with_template(tokenizer, template)
        for messages in CONVERSATIONS:
            for generation_prompt in (False, True):
                expected = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=generation_prompt
                )
                assert render_template(tokenizer, messages, add_generation_prompt=generation_prompt) == expected
    finally:
        tokenizer.chat_template = own


#: template -> what the refusal says; each would run for minutes or take gigabytes without the budget
HOSTILE = {
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}": "more than 2,000,000 steps",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "more than 2,000,000 steps",
    "{% for c in messages[0].content %}{% for d in messages[0].content %}{% endfor %}{% endfor %}": "steps",
    "{{ range(10**9)|length }}": "passed 1,000,000,000 to range",
    "{{ range(200000)|length }}": "range() of 200,000 items",
    "{{ 'x' * 10**10 }}": "would make a repeated string or list of 10,000,000,000 characters",
    "{{ ([1] * 10**9)|length }}": "would make a repeated string or list of 1,000,000,000 items",
    "{{ ([1] * 10**7)|length }}": "would make a repeated string or list of 10,000,000 items (at most 1,000,000)",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}": "items",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}": "characters",
    "{% set s = 'xx' %}" + "{% set s = s ~ s %}" * 64 + "{{ s|length }}": "characters",
    "{% set s = 'x' %}" + "{% set s = s + s %}" * 64: "would make a joined string or list",
    "{{ range(100000)|join('y' * 1000000) }}": "would make a joined string of 99,999,000,000 characters",
    "{{ ('y' * 1000000).join(range(100000)|map('string')) }}": "would make a joined string",
    "{{ ('a' * 1000000)|replace('a', 'b' * 1000) }}": "would make a replaced string of 1,000,000,000",
    "{{ ('a' * 1000000).replace('a', 'b' * 1000) }}": "would make a replaced string of 1,000,000,000",
    "{{ 'x'|center(10**10) }}": "passed 10,000,000,000 to the center filter",
    "{{ 'x'.ljust(10**10) }}": "passed 10,000,000,000 to str.ljust",
    "{{ '%0999999999d' % 1 }}": "a format width or precision of a million characters or more",
    "{{ '%0999999999d'|format(1) }}": "a format width or precision",
    "{{ '{:>999999999}'.format(1) }}": "a format width or precision",
    "{{ '{:{}}'.format(1, 10**9) }}": "a format width or precision",
    "{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format('x' * 10000000) }}": "would make a formatted string",
    "{{ ('x\n' * 1000000)|indent(1000) }}": "would make an indented string",
    "{{ ('x' * 1000000)|wordwrap(1, wrapstring='y' * 1000) }}": "would make a wrapped string",
    "{{ [1]|batch(10**8, 'x')|list|length }}": "passed 100,000,000 to the batch filter",
    "{{ [1]|tojson(indent=10**9) }}": "passed 1,000,000,000 to tojson",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}": "recursed too deep",
    "{% macro d(x) %}{{ x ~ x }}{% endmacro %}{% set ns = namespace(s='x') %}{% for i in range(60) %}"
    "{% set ns.s = d(ns.s) %}{% endfor %}": "characters",
    "{% set s = 'x' * 30000000 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}": "would make an output of 60,000,000 characters",
    "{{ 10 ** 100000000 }}": "computed with an integer of about 300,000,000 bits",
    "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}": "integer",
    "{{ (('x' * 30000000)|list)|length }}": "made a collection of 30,000,000 items",
    "{{ ''.__class__.__mro__ }}": "did what the sandbox forbids: access to attribute '__class__'",
    "{% set ns = namespace() %}{% set ns.__dict__ = 1 %}": "did what the sandbox forbids",
    "{% for %}": "is not a valid Jinja template",
    # found against the sandbox itself: Jinja's lipsum() made 448 million characters in two minutes
    "{{ lipsum(n=1000000)|length }}": "passed n=1,000,000 to lipsum (at most 100)",
    "{{ lipsum(n=10, min=1, max=10**8)|length }}": "passed max=100,000,000 to lipsum (at most 1,000)",
}


@pytest.mark.parametrize("template", HOSTILE)
def test_a_hostile_template_stops_within_seconds_with_a_clear_error(tokenizer, template):
    own = tokenizer.chat_template
    messages = [{"role": "user", "content": "hello " * 2000}]
    try:
        _with_template(tokenizer, template)
        started = time.monotonic()
        with pytest.raises(TemplateRefused) as caught:
            render_template(tokenizer, messages, add_generation_prompt=True)
        assert time.monotonic() - started < 20  # about a second; the machine may be busy
    finally:
        tokenizer.chat_template = own
    message = str(caught.value)
    assert message.startswith(f"the chat template of {tokenizer.name_or_path} ")
    assert HOSTILE[template] in message, message
    assert "\n    fix: give generation_config.prompt_format" in message
    assert caught.value.exit_code == ExitCode.DATA_INVALID


def test_a_template_that_refuses_a_conversation_makes_that_conversation_bad_not_the_template(tokenizer):
    own = tokenizer.chat_template
    try:
        _with_template(tokenizer, "{{ raise_exception('roles must alternate\x1b[2J') }}")
        with pytest.raises(DataInvalid) as caught:
            render_template(tokenizer, CONVERSATIONS[0], add_generation_prompt=False)
    finally:
        tokenizer.chat_template = own
    assert not isinstance(caught.value, TemplateRefused)
    assert str(caught.value) == (
        f"the chat template of {tokenizer.name_or_path} refused this conversation: roles must alternate\\x1b[2J"
    )


def test_an_empty_conversation_is_refused_as_transformers_refuses_it(tokenizer):
    with pytest.raises(DataInvalid, match="an empty conversation"):
        render_template(tokenizer, [], add_generation_prompt=True)


def test_a_tokenizer_without_a_chat_template_is_a_clear_error_not_a_traceback(tokenizer):
    own = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        with pytest.raises(TemplateRefused) as caught:
            render_template(tokenizer, CONVERSATIONS[0], add_generation_prompt=True)
        tokenizer.chat_template = {"default": TEMPLATES["chatml"], "tool_use": "{{ 1/0 }}"}  # named: the default one
        rendered = render_template(tokenizer, CONVERSATIONS[0], add_generation_prompt=True)
        assert rendered == tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    finally:
        tokenizer.chat_template = own
    assert str(caught.value).startswith(f"{tokenizer.name_or_path} has no chat template\n    fix: ")
