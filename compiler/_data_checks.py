"""Checks of the spec against its data: every data file is chat JSONL (the first bad line named), and the context
length fits the model.

Each function appends :class:`~ftc.errors.Problem` s to the loaded spec (so every problem is reported at once)
and returns what the plan needs.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ftc.spec import LoadedSpec
from ftc.spec.architectures import Architecture
from ftc.spec.chat_data import CHECKS_VERSION, EXAMPLE, check_chat_jsonl
from ftc.stores.hashing import StatCache
from ftc.stores.sources import ResolvedInput

__all__ = ["check_chat_data", "check_context_length"]

_DEFAULT_CONTEXT = 2048


def _display(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith(".." + os.sep + "..") else str(path)


def check_context_length(loaded: LoadedSpec, arch: Architecture | None) -> int:
    """The context length to train with: the spec's, or min(2048, the model's max positions)."""
    limit = arch.max_position_embeddings if arch else None
    given = loaded.spec.context_length
    if given is None:
        return min(_DEFAULT_CONTEXT, limit) if isinstance(limit, int) else _DEFAULT_CONTEXT
    if isinstance(limit, int) and given > limit:
        loaded.problems.append(
            loaded.problem(
                ("context_length",),
                f"{given} is above the model's max_position_embeddings ({limit})",
                f"set context_length to {limit} or less "
                "(or use weights whose config.json raises max_position_embeddings)",
                value=given,
            )
        )
    return given


def check_chat_data(loaded: LoadedSpec, at: tuple, item: ResolvedInput, cache: StatCache | None) -> ResolvedInput:
    """``item`` with its number of examples; every bad data file becomes a problem naming its first bad line."""
    if item.local_path is None:
        return item
    if item.kind != "file":
        loaded.problems.append(
            loaded.problem(at, "must be a JSONL file, not a folder", "point at the .jsonl file", kind="input")
        )
        return item
    key = f"chat-jsonl-v{CHECKS_VERSION}:{item.entry.digest}"
    found = cache.note(key) if cache else None
    if found is None:
        report = check_chat_jsonl(item.local_path)
        found = {"records": report.records, "bad": report.bad_lines, "lines": [list(b) for b in report.bad]}
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


def _data_problem(loaded: LoadedSpec, at: tuple, path: Path, line: int, reason: str):
    problem = loaded.problem(
        at, reason, f"each line must be one chat example, like {EXAMPLE} (or set skip_bad_examples: true)"
    )
    return replace(problem, file=_display(path), line=line, where=f"{problem.where} (spec line {problem.line})")
