"""Chat templates rendered in ftc's own Jinja sandbox, with a budget.

A chat template comes with the weights: it is outside input, and Jinja is a language. transformers renders it in
Jinja's immutable sandbox (no attribute of Python's internals, no mutation), which stops escapes but not work: nested
``range(100000)`` loops, a string doubled in a loop, ``'x' * 10**10`` or a ``join`` with a huge separator run for
minutes or take all memory. Here the same template renders to exactly the same text (the environment, its filters,
globals and the template's inputs are transformers'), but every loop step, call, attribute access and piece of output
is counted against a budget of steps and seconds, and no value, output or argument may exceed a size: what exceeds it
stops the render with :class:`TemplateRefused` (exit 7), naming the template.

This module is the renderer: the conversation as transformers hands it over, and each failure made an error a user
can act on. The budget and its checks are ``_template_limits``; the Jinja environment that applies them is
``_template_environment``.
"""

from __future__ import annotations

import functools
from typing import Any

from ftc.errors import DataInvalid
from ftc.spec.text import for_terminal

from ._template_limits import BUDGET, Budget, Exceeded

__all__ = ["TemplateRefused", "render_template"]


class TemplateRefused(DataInvalid):
    """A chat template that exceeded its budget, or did what the sandbox forbids: the template is at fault, not one
    conversation, so a run stops on it (exit 7)."""


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    from ._template_environment import bounded_environment  # imports Jinja: only when a template is rendered

    return bounded_environment().from_string(template)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as transformers gives it to a template: keys whose value is None dropped, a message's
    reasoning also under ``reasoning_content`` and ``thinking``."""
    out = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next(
            (message[k] for k in ("reasoning_content", "thinking", "reasoning") if message.get(k) is not None), None
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def template_name(tokenizer: Any) -> str:
    return f"the chat template of {for_terminal(str(getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'))}"


def render_template(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    """What ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`` renders, within
    the budget. Raises :class:`TemplateRefused` for a template at fault (over budget, forbidden by the sandbox, not
    valid Jinja), :class:`DataInvalid` for a conversation the template refuses (its ``raise_exception``)."""
    import jinja2

    if not messages:
        raise DataInvalid(
            "an empty conversation: there is nothing to render (a conversation needs a turn before its answer)"
        )
    name = template_name(tokenizer)
    fix = "\n    fix: give generation_config.prompt_format, or use a tokenizer whose chat template you have read"
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one, as apply_chat_template takes it
        template = template.get("default")
    if not isinstance(template, str) or not template:
        raise TemplateRefused(f"{name.replace('the chat template of ', '', 1)} has no chat template{fix}")
    budget = Budget()
    token = BUDGET.set(budget)
    try:
        compiled = _compiled(template)
        values = {**tokenizer.special_tokens_map, "tools": None, "documents": None}
        return compiled.render(messages=_messages(messages), add_generation_prompt=add_generation_prompt, **values)
    except Exceeded as exc:
        raise TemplateRefused(f"{name} {exc}: ftc stops a template there{fix}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateRefused(f"{name} did what the sandbox forbids: {for_terminal(str(exc))}{fix}") from None
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TemplateRefused(f"{name} is not a valid Jinja template: {for_terminal(str(exc))}{fix}") from None
    except (RecursionError, MemoryError) as exc:
        why = "recursed too deep" if isinstance(exc, RecursionError) else "ran out of memory"
        raise TemplateRefused(f"{name} {why}{fix}") from None
    except jinja2.exceptions.TemplateError as exc:  # raise_exception: the template refuses this conversation
        raise DataInvalid(f"{name} refused this conversation: {for_terminal(str(exc))}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        raise DataInvalid(f"{name} failed on this conversation: {for_terminal(str(exc))}") from None
    finally:
        BUDGET.reset(token)
