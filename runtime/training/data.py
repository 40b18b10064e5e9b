"""A plan's data inputs as a recipe trains on them: each rendered, tokenized (rank 0 first, through the token
cache) and checked against the context length."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftc.spec.plan import Plan
from ftc.spec.tasks import TASKS

from .distributed import Dist
from .inputs import FoundInputs
from .render import renderer_for
from .tokens import token_cache, tokenize_file, usable_examples

__all__ = ["DATA_ROLES", "conversations_at", "data_cache", "describe_data", "load_data"]

#: the plan's data inputs, in the order they are read
DATA_ROLES = ("train", "valid")


def load_data(
    plan: Plan,
    dist: Dist,
    paths: FoundInputs,
    tokenizer: Any,
    tokenizer_source: str,
    side: str | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """(role -> ``Examples``, role -> examples skipped) for each data input the plan has. ``tokenizer_source``
    (``base weights`` or ``adapter``) says which input's tokenizer the token cache is keyed by. ``side``
    (``chosen`` or ``rejected``): the data are preference pairs, and this side of each is read
    (:func:`ftc.runtime.training.preference.load_pairs` reads both)."""
    spec = plan.spec
    render = renderer_for(spec.generation_config.prompt_format, tokenizer, when_needed=TASKS[spec.task].every_token)
    labels = spec.classifier_config.label_tokens if spec.classifier_config is not None else None
    data, skipped = {}, {}
    for role in DATA_ROLES:
        if role not in paths:
            continue
        cache_file = data_cache(plan, role, tokenizer, tokenizer_source, side)
        reading = dict(
            render=render, tokenizer=tokenizer, cache_file=cache_file, task=spec.task, labels=labels, side=side,
            before_store=paths.check_unchanged,  # nothing cached under the pinned digest from other bytes
        )  # fmt: skip
        if dist.main:  # one process tokenizes; the others read its cache
            examples, bad = tokenize_file(paths[role], **reading)
        dist.barrier()
        if not dist.main:
            examples, bad = tokenize_file(paths[role], **reading)
        data[role], skipped[role] = usable_examples(
            examples, bad, context_length=spec.context_length, skip=spec.skip_bad_examples,
            display=plan.inputs[role].uri,
        )  # fmt: skip
    return data, skipped


def data_cache(plan: Plan, role: str, tokenizer: Any, tokenizer_source: str, side: str | None = None) -> Path | None:
    """Where the plan's data input ``role`` is cached tokenized (:func:`~ftc.runtime.training.tokens.token_cache`:
    keyed by the data, the tokenizer's files, the rendering and what the task trains); None when it is not."""
    spec = plan.spec
    fmt = spec.generation_config.prompt_format
    renderer_key = dataclasses.asdict(fmt) if fmt is not None else ["chat_template", tokenizer.chat_template]
    tokenizer_folder = {"base weights": plan.inputs["base_model"], "adapter": plan.inputs.get("adapter")}.get(
        tokenizer_source
    )
    labels = spec.classifier_config.label_tokens if spec.classifier_config is not None else None
    return token_cache(plan.inputs[role], tokenizer_folder, renderer_key, spec.task, labels, side)


def describe_data(data: dict[str, Any], skipped: dict[str, int], task: str, say: Callable[[str], None]) -> None:
    """Say how many examples and tokens each data input has, how many are trained on (what ``task`` trains), and
    what was skipped."""
    for role, examples in data.items():
        tokens, trained = int(examples.lengths.sum()), sum(int(m.sum()) for m in examples.trainable)
        what = TASKS[task].trained_tokens
        say(
            f"{role}: {len(examples):,} examples, {tokens:,} tokens, {trained:,} of them trained "
            f"({100 * trained / max(tokens, 1):.1f}%, {what})"
        )
    for role, count in skipped.items():
        if count:
            say(f"{role}: skipped {count} bad example(s) (skip_bad_examples)")


def conversations_at(path: Path, lines: list[int], side: str | None = None) -> list[list[dict[str, Any]]]:
    """The conversations at ``lines`` of a chat-JSONL file, in that order (the examples a run evaluates); with a
    ``side`` (``chosen``), that side of each preference pair of a pair file."""
    from ftc.spec.chat_data import read_chat_jsonl, read_preference_pairs

    if side is None:
        found = {item.line: item.messages for item in read_chat_jsonl(path) if item.problem is None}
    else:
        found = {item.line: getattr(item, side) for item in read_preference_pairs(path) if item.problem is None}
    return [found[line] for line in lines]
