"""Render a chat conversation into text plus the character spans the loss is computed on (assistant turns).

Two renderers: the spec's ``prompt_format`` (the seed guide's semantics) and the tokenizer's own chat template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftc.errors import DataInvalid
from ftc.spec import PromptFormat

__all__ = ["Rendered", "render_prompt_format", "render_chat_template", "renderer_for"]

PLACEHOLDER = "{instruction}"


@dataclass(frozen=True)
class Rendered:
    text: str
    #: [start, end) character ranges whose tokens are trained on
    loss_spans: tuple[tuple[int, int], ...]


def _fill(template: str, instruction: str, system: str = "") -> str:
    # plain replacement, not str.format: templates may hold literal braces ({{ role }} in Llama Guard prompts)
    return template.replace("{system}", system).replace(PLACEHOLDER, instruction)


def render_prompt_format(messages: list[dict[str, Any]], fmt: PromptFormat) -> Rendered:
    """The seed guide's prompt format: ``bos``, then each message through its role's template.

    - A conversation without a system message gets ``default_system_message`` (when non-empty).
    - ``system_in_user``: the rendered system message goes into the ``{system}`` placeholder of the first user
      message instead of standing on its own.
    - Loss spans cover each assistant message from its content to the end of its template (so the model learns
      the end-of-turn text too), not the template's opening (``trailing_assistant`` supplies that at inference).
    """
    if (not messages or messages[0]["role"] != "system") and fmt.default_system_message:
        messages = [{"role": "system", "content": fmt.default_system_message}, *messages]
    parts = [fmt.bos]
    position = len(fmt.bos)
    spans = []
    pending_system = ""
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            text = _fill(fmt.system, content)
            if fmt.system_in_user:
                pending_system = text
                continue
        elif role == "user":
            text = _fill(fmt.user, content, pending_system)
            pending_system = ""
        else:
            prefix = _fill(fmt.assistant.split(PLACEHOLDER, 1)[0], "")
            text = _fill(fmt.assistant, content)
            spans.append((position + len(prefix), position + len(text)))
        parts.append(text)
        position += len(text)
    return Rendered("".join(parts), tuple(spans))


def render_chat_template(messages: list[dict[str, Any]], tokenizer: Any) -> Rendered:
    """The tokenizer's chat template. Each assistant turn's span is the text the template adds for it after the
    generation prompt, found by rendering the conversation up to each turn."""

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=generation_prompt)

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


def renderer_for(fmt: PromptFormat | None, tokenizer: Any) -> Callable[[list[dict[str, Any]]], Rendered]:
    if fmt is not None:
        return lambda messages: render_prompt_format(messages, fmt)
    if not getattr(tokenizer, "chat_template", None):
        raise DataInvalid(
            "no generation_config.prompt_format and the tokenizer has no chat template: give a prompt_format"
        )
    return lambda messages: render_chat_template(messages, tokenizer)
