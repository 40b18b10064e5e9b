"""Checks of the spec against its data: every data file is chat JSONL as the task reads it (conversations, or
preference pairs; the first bad lines named), and the context length fits the model.

Each function appends :class:`~ftc.errors.Problem` s to the loaded spec (so every problem is reported at once)
and returns what the plan needs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from ftc.spec import LoadedSpec
from ftc.spec.architectures import Architecture
from ftc.spec.chat_data import CHECKS_VERSION, EXAMPLE, EXAMPLE_PAIR, TEXT_EXAMPLE, check_chat_jsonl
from ftc.spec.reading import ChangedSincePinned
from ftc.spec.rope import SCALING_TECHNIQUE, RopeScaling, factor_hint, native_length, resolve_rope_scaling
from ftc.spec.tasks import TASKS
from ftc.stores.hashing import StatCache, hash_file
from ftc.stores.sources import ResolvedInput

__all__ = ["check_chat_data", "check_context_length"]

_DEFAULT_CONTEXT = 2048


def _display(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith(".." + os.sep + "..") else str(path)


def check_context_length(loaded: LoadedSpec, arch: Architecture | None) -> tuple[int, RopeScaling | None]:
    """The context length to train with (the spec's, or min(2048, what the model takes)) and the spec's RoPE
    scaling resolved against the model (every value filled in). Above the model's max_position_embeddings only
    with rope_scaling, up to its factor x the native length."""
    given = loaded.spec.context_length
    rope = loaded.spec.rope_scaling
    raw = loaded.source.data if isinstance(loaded.source.data, dict) else {}
    if raw.get(SCALING_TECHNIQUE) == "linear" and raw.get("rope_scaling") is not None:
        loaded.problems.append(
            loaded.problem(
                (SCALING_TECHNIQUE,),
                "llmforge's embedding_scaling_technique: linear and rope_scaling both say how to extend the context",
                "keep one: rope_scaling (embedding_scaling_technique: linear means rope_scaling: {rope_type: linear})",
            )
        )
    # llmforge's spelling given, its problems are put where the spec says it
    alias = raw.get(SCALING_TECHNIQUE) == "linear" and raw.get("rope_scaling") is None
    if rope is not None and arch is not None:
        rope, found = resolve_rope_scaling(rope, arch.config, given)
        for at, message, fix in found:
            loaded.problems.append(
                loaded.problem((SCALING_TECHNIQUE,) if alias else ("rope_scaling", *at), message, fix)
            )
    else:
        rope = None  # no model to resolve it against: the model's own problems say why
    limit = rope.max_positions if rope is not None else arch.max_position_embeddings if arch else None
    if loaded.spec.rope_scaling is not None and rope is None:
        return given or _DEFAULT_CONTEXT, None  # the scaling's own problems come first
    if given is None:
        return (min(_DEFAULT_CONTEXT, limit) if isinstance(limit, int) else _DEFAULT_CONTEXT), rope
    if isinstance(limit, int) and given > limit:
        loaded.problems.append(_too_long(loaded, given, limit, rope, native_length(arch.config) or limit))
    return given, rope


def _too_long(loaded: LoadedSpec, given: int, limit: int, rope: RopeScaling | None, native: int):
    if rope is None:
        message = f"{given} is above the model's max_position_embeddings ({limit})"
        fix = (
            f"set context_length to {limit} or less, or extend the model's context with rope_scaling "
            f"(e.g. rope_scaling: {{rope_type: linear, factor: {factor_hint(given, native)}}})"
        )
    else:
        message = f"{given} is above what rope_scaling {rope.describe()} takes ({limit})"
        fix = f"raise rope_scaling.factor to {factor_hint(given, native)} or more, or lower context_length to {limit}"
    return loaded.problem(("context_length",), message, fix, value=given)


def check_chat_data(loaded: LoadedSpec, at: tuple, item: ResolvedInput, cache: StatCache | None) -> ResolvedInput:
    """``item`` with its number of examples; every bad data file becomes a problem naming its first bad line."""
    if at == ("valid_path",) and TASKS[loaded.spec.task].every_token and loaded.spec.evaluation.generate:
        loaded.problems.append(
            loaded.problem(
                ("evaluation", "generate"),
                f"task {loaded.spec.task} trains every token of text and conversations; there is no answer to "
                "generate and compare",
                "set evaluation.generate: false (the validation loss is still measured)",
                value=True,
            )
        )
    if item.local_path is None:
        return item
    if item.kind != "file":
        loaded.problems.append(
            loaded.problem(at, "must be a JSONL file, not a folder", "point at the .jsonl file", kind="input")
        )
        return item
    task = loaded.spec.task
    labels = loaded.spec.classifier_config.label_tokens if loaded.spec.classifier_config else None
    key = f"chat-jsonl-v{CHECKS_VERSION}-{task}{_labels_key(labels)}:{item.entry.digest}"
    found = cache.note(key) if cache else None
    if found is None:
        report = check_chat_jsonl(item.local_path, task, labels)
        found = {"records": report.records, "bad": report.bad_lines, "lines": [list(b) for b in report.bad]}
        if not _still_pinned(item, cache):
            changed = ChangedSincePinned.at(item.local_path)  # a report of other bytes: not for the plan nor the cache
            loaded.problems.append(loaded.problem(at, str(changed), changed.fix, kind="changed"))
            return item
        if cache:
            cache.remember(key, found)
    if found["bad"] and not loaded.spec.skip_bad_examples:
        for line, reason in found["lines"]:  # every bad line at once, up to a cap, then how many more
            loaded.problems.append(_data_problem(loaded, at, item.local_path, line, reason))
        rest = found["bad"] - len(found["lines"])
        if rest:
            last = found["lines"][-1][0]
            loaded.problems.append(_data_problem(loaded, at, item.local_path, last, f"and {rest} more bad lines after"))
        return item
    if found["records"] == 0:
        reason = f"no usable examples ({found['bad']} bad lines)" if found["bad"] else "no examples (the file is empty)"
        first = found["lines"][0][0] if found["lines"] else 1
        loaded.problems.append(_data_problem(loaded, at, item.local_path, first, reason))
        return item
    return item.with_records(found["records"], found["bad"])


def _still_pinned(item: ResolvedInput, cache: StatCache | None) -> bool:
    """Whether the file ``item`` still holds the bytes its digest pins (a file left alone since it was hashed: one
    stat cache lookup)."""
    try:
        return "sha256:" + hash_file(item.local_path, cache)[0] == item.entry.digest
    except OSError:  # gone, or replaced by something that is not a file (NotAnInput)
        return False


def _labels_key(labels: tuple[str, ...] | None) -> str:
    """What a classifier's check of a file depends on beyond its bytes and task: its labels."""
    if labels is None:
        return ""
    return "-" + hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:16]


def _data_problem(loaded: LoadedSpec, at: tuple, path: Path, line: int, reason: str):
    if TASKS[loaded.spec.task].every_token:  # a conversation, or raw text
        want = f"a chat example, like {EXAMPLE}, or a text example, like {TEXT_EXAMPLE}"
    elif TASKS[loaded.spec.task].pairs:
        want = (
            'a preference pair: the same conversation twice, ending with the preferred final answer in "chosen" '
            f'and a worse one in "rejected", like {EXAMPLE_PAIR}'
        )
    elif loaded.spec.classifier_config is not None:
        want = (
            "a chat example whose last message is the assistant's answer: one of classifier_config's labels, "
            "optionally a line of categories after it"
        )
    else:
        want = f"one chat example, like {EXAMPLE}"
    problem = loaded.problem(at, reason, f"each line must be {want} (or set skip_bad_examples: true)")
    return replace(problem, file=_display(path), line=line, where=f"{problem.where} (spec line {problem.line})")
