"""The spec's ``prompt_format`` as a Hugging Face chat template (Jinja), and the stop text it implies.

Serving tokenizes what ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` renders, so the
template written into every checkpoint and export renders exactly the text training tokenized
(:func:`ftc.runtime.training.render.render_prompt_format`), piece by piece from the same templates: bos, the system
message (own, default, empty, stripped, in the first user message), each turn, and ``trailing_assistant`` as the
generation prompt. Tests hold the two renderers equal, token for token, over every example the project ships.
"""

from __future__ import annotations

import json

from ftc.spec import PromptFormat

from .render import PLACEHOLDER, template_pieces

__all__ = ["chat_template", "stop_texts"]


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal. Jinja reads backslash escapes as Python does; JSON writes the control
    characters as such escapes and leaves other characters as they are (an astral character must not become a
    surrogate pair, which Jinja would not join)."""
    return json.dumps(text, ensure_ascii=False)


def _expression(template: str, *, instruction: str, system: str = '""') -> str:
    """A Jinja expression that fills ``template`` as :func:`ftc.runtime.training.render.fill` does (one pass)."""
    values = {"instruction": instruction, "system": system}
    parts = [
        _literal(piece) if i % 2 == 0 else values[piece]
        for i, piece in enumerate(template_pieces(template))
        if i % 2 == 1 or piece
    ]
    return " ~ ".join(parts) if parts else '""'


def chat_template(fmt: PromptFormat) -> str:
    """The chat template of ``fmt``: ``apply_chat_template`` renders what training rendered; with
    ``add_generation_prompt``, followed by ``trailing_assistant``."""
    strip = " | trim" if fmt.strip_whitespace else ""
    system = _expression(fmt.system, instruction="system")
    lines = [
        "{#- written by ftc from generation_config.prompt_format: renders exactly what training tokenized -#}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        f"{{%- set system = messages[0]['content']{strip} -%}}",
        "{%- set turns = messages[1:] -%}",
        "{%- else -%}",
        f"{{%- set system = {_literal(fmt.default_system_message)}{strip} -%}}",
        "{%- set turns = messages -%}",
        "{%- endif -%}",
        f"{{{{- {_literal(fmt.bos)} -}}}}",
        "{%- set ns = namespace(system='') -%}",
        f"{{%- if system != '' or {'true' if fmt.add_system_tags_even_if_message_is_empty else 'false'} -%}}",
        f"{{%- set ns.system = {system} -%}}" if fmt.system_in_user else f"{{{{- {system} -}}}}",
        "{%- endif -%}",
        "{%- for message in turns -%}",
        f"{{%- set content = message['content']{strip} -%}}",
        "{%- if message['role'] == 'user' -%}",
        f"{{{{- {_expression(fmt.user, instruction='content', system='ns.system')} -}}}}",
        "{%- set ns.system = '' -%}",
        "{%- elif message['role'] == 'assistant' -%}",
        f"{{{{- {_expression(fmt.assistant, instruction='content')} -}}}}",
        "{%- else -%}",
        "{{- raise_exception('a system message may only come first; got one at turn ' ~ loop.index) -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}",
        f"{{{{- {_literal(fmt.trailing_assistant)} -}}}}",
        "{%- endif -%}",
    ]
    return "\n".join(lines)


def stop_texts(fmt: PromptFormat | None, stopping_sequences: tuple[str, ...]) -> list[str]:
    """The text that ends an assistant turn: ``stopping_sequences`` and the end of the assistant template (what
    follows ``{instruction}``, its surrounding whitespace aside), in that order, each once."""
    found: list[str] = []
    end = fmt.assistant.split(PLACEHOLDER)[-1].strip() if fmt is not None and PLACEHOLDER in fmt.assistant else ""
    for text in [*stopping_sequences, end]:
        if text and text not in found:
            found.append(text)
    return found
