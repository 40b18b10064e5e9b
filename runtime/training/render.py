"""Render a chat conversation into text plus the character spans the loss is computed on (assistant turns).

Two renderers: the spec's ``prompt_format`` (the seed guide's semantics) and the tokenizer's own chat template.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftc.errors import DataInvalid
from ftc.spec import PromptFormat

from .sandbox import TemplateRefused, render_template

__all__ = ["PLACEHOLDER", "Rendered", "render_chat_template", "render_prompt_format", "renderer_for", "template_pieces"]

PLACEHOLDER = "{instruction}"
#: the placeholders a template may hold, filled in one pass (a message that contains "{instruction}" stays as is)
_SLOTS = re.compile(r"\{(instruction|system)\}")


@dataclass(frozen=True)
class Rendered:
    text: str
    #: [start, end) character ranges whose tokens are trained on
    loss_spans: tuple[tuple[int, int], ...]


def template_pieces(template: str) -> list[str]:
    """``template`` split at its placeholders: literal text at even positions, ``instruction``/``system`` at odd
    ones (the chat template exported for serving is built from the same pieces)."""
    return _SLOTS.split(template)


def fill(template: str, instruction: str, system: str = "") -> str:
    # plain replacement, not str.format: templates may hold literal braces ({{ role }} in Llama Guard prompts)
    values = {"instruction": instruction, "system": system}
    return "".join(piece if i % 2 == 0 else values[piece] for i, piece in enumerate(template_pieces(template)))


def system_message(messages: list[dict[str, Any]], fmt: PromptFormat) -> tuple[str | None, list[dict[str, Any]]]:
    """The conversation's system message (its own, else ``default_system_message``; None: no system text at all,
    which is also what an empty one is unless ``add_system_tags_even_if_message_is_empty``) and the other messages."""
    if messages and messages[0]["role"] == "system":
        content, rest = messages[0]["content"], messages[1:]
    else:
        content, rest = fmt.default_system_message, messages
    if fmt.strip_whitespace:
        content = content.strip()
    if not content and not fmt.add_system_tags_even_if_message_is_empty:
        return None, rest
    return content, rest


def render_prompt_format(messages: list[dict[str, Any]], fmt: PromptFormat) -> Rendered:
    """The seed guide's prompt format: ``bos``, then each message through its role's template.

    - A conversation without a system message gets ``default_system_message``; an empty system message renders
      nothing unless ``add_system_tags_even_if_message_is_empty``.
    - ``strip_whitespace``: each message's content is stripped before it is filled in.
    - ``system_in_user``: the rendered system message goes into the ``{system}`` placeholder of the first user
      message instead of standing on its own.
    - Loss spans cover each assistant message from its content to the end of its template (so the model learns
      the end-of-turn text too), not the template's opening (``trailing_assistant`` supplies that at inference).
    """
    system, messages = system_message(messages, fmt)
    parts = [fmt.bos]
    position = len(fmt.bos)
    spans = []
    pending_system = ""
    if system is not None:
        text = fill(fmt.system, system)
        if fmt.system_in_user:
            pending_system = text
        else:
            parts.append(text)
            position += len(text)
    for message in messages:
        role, content = message["role"], message["content"]
        if fmt.strip_whitespace:
            content = content.strip()
        if role == "user":
            text = fill(fmt.user, content, pending_system)
            pending_system = ""
        else:
            prefix = fill(fmt.assistant.split(PLACEHOLDER, 1)[0], "")
            text = fill(fmt.assistant, content)
            spans.append((position + len(prefix), position + len(text)))
        parts.append(text)
        position += len(text)
    return Rendered("".join(parts), tuple(spans))


def render_chat_template(messages: list[dict[str, Any]], tokenizer: Any) -> Rendered:
    """The tokenizer's chat template, rendered as ``apply_chat_template`` renders it but within a budget
    (:mod:`.sandbox`). Each assistant turn's span is the text the template adds for it after the generation prompt,
    found by rendering the conversation up to each turn."""

    def render(upto: int, generation_prompt: bool) -> str:
        return render_template(tokenizer, messages[:upto], add_generation_prompt=generation_prompt)

    full = render(len(messages), False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(i, True), render(i + 1, False)
        if not (through.startswith(before) and full.startswith(through)):
            raise DataInvalid(
                "the tokenizer's chat template does not render conversations incrementally (a later turn changes "
                "earlier text), so assistant turns cannot be located; give generation_config.prompt_format"
            )
        spans.append((len(before), len(through)))
    return Rendered(full, tuple(spans))


def renderer_for(
    fmt: PromptFormat | None, tokenizer: Any, *, when_needed: bool = False
) -> Callable[[list[dict[str, Any]]], Rendered]:
    """How conversations are rendered: the spec's prompt_format, else the tokenizer's chat template. With neither,
    :class:`DataInvalid` now, or with ``when_needed`` (causal_lm, whose ``{"text": ...}`` lines need no template)
    when the first conversation is rendered (:class:`TemplateRefused`: it stops the run, naming that line)."""
    if fmt is not None:
        return lambda messages: render_prompt_format(messages, fmt)
    if not getattr(tokenizer, "chat_template", None):
        missing = "no generation_config.prompt_format and the tokenizer has no chat template: give a prompt_format"
        if not when_needed:
            raise DataInvalid(missing)

        def refuse(messages: list[dict[str, Any]]) -> Rendered:
            raise TemplateRefused(missing)

        return refuse
    return lambda messages: render_chat_template(messages, tokenizer)
