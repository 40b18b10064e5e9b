"""The chat data format, read in one place: JSONL, one ``{"messages": [{"role", "content"}, ...]}`` per line.

For ``task: causal_lm`` (every token trained) a line may also be ``{"text": "..."}`` (raw text, no template), and a
conversation need not hold an assistant turn. For ``task: classification`` a conversation ends with the assistant's
answer, whose first line is exactly one of the labels (a line of categories may follow it). For ``task:
preference_tuning`` a line is a pair, ``{"chosen": [...], "rejected": [...]}``: two conversations that differ only in
their final assistant answer (:func:`read_preference_pairs`). The compiler counts the examples and finds the first
bad lines; the runtime renders and tokenizes the good ones. Both read through :func:`read_examples` (a recipe of
pairs through :func:`read_preference_pairs`), so a bad line gets the same reason at compile and at run time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .reading import NotFinite, finite_json
from .tasks import TASKS

__all__ = [
    "CHECKS_VERSION",
    "EXAMPLE",
    "EXAMPLE_PAIR",
    "TEXT_EXAMPLE",
    "ROLES",
    "ChatDataReport",
    "ChatLine",
    "PreferenceLine",
    "check_chat_jsonl",
    "answer_label",
    "label_problem",
    "message_problem",
    "pair_problem",
    "read_chat_jsonl",
    "read_examples",
    "read_preference_pairs",
]

ROLES = ("system", "user", "assistant")
EXAMPLE = '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}'
#: a line of raw text (task: causal_lm only)
TEXT_EXAMPLE = '{"text": "Any document, trained on token by token."}'
#: a preference pair (task: preference_tuning): one conversation, two final answers
EXAMPLE_PAIR = (
    '{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], '
    '"rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}'
)
#: a pair's two conversations, in the order a line names them
PAIR_SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class ChatDataReport:
    """What a data file holds: how many examples, how many bad lines, and the first MAX_REPORTED of them."""

    records: int
    bad_lines: int = 0
    #: (line, reason) of the first bad lines, in file order
    bad: tuple[tuple[int, str], ...] = ()


#: bump when what counts as a bad line changes: cached results of checking a file are keyed by it (and the task)
CHECKS_VERSION = 8

#: bad lines described one by one per file (the rest are counted)
MAX_REPORTED = 10


def message_problem(record: object, require_answer: bool = True) -> str | None:
    """Why ``record`` (one parsed line) is not a chat example, or None when it is one. Without ``require_answer``
    a conversation need not hold an assistant turn (a prompt to answer)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    messages = record.get("messages")
    if not isinstance(messages, list):
        if "messages" in record:
            return '"messages" is not a list'
        # llmforge's continued pre-training data or preference pairs, given to the default task
        if "chosen" in record:
            return 'no "messages" list ({"chosen": ..., "rejected": ...} lines are task preference_tuning\'s)'
        return 'no "messages" list' + (' ({"text": ...} lines are task causal_lm\'s)' if "text" in record else "")
    if not messages:
        return '"messages" is empty'
    has_assistant = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] is not an object"
        role = msg.get("role")
        if role not in ROLES:
            return f"messages[{i}] has unknown role {json.dumps(role)} (expected one of: {', '.join(ROLES)})"
        content = msg.get("content")
        if not isinstance(content, str):
            return f"messages[{i}] ({role}) has no string content"
        if not _is_text(content):
            return f"messages[{i}] ({role}) holds a lone surrogate (an escape such as \\ud800), which is not text"
        if role == "system" and i != 0:
            return f"messages[{i}] is a system message after the first message"
        if role == "assistant":
            if not content.strip():
                return f"messages[{i}] is an empty assistant turn (nothing to learn from)"
            has_assistant = True
    if not has_assistant and require_answer:
        return "no assistant message (the loss is computed on assistant turns only; task causal_lm trains every token)"
    return None


@dataclass(frozen=True)
class ChatLine:
    """One non-blank line of a chat-JSONL file: its messages (or, for causal_lm, its text), or why it is not an
    example."""

    line: int
    messages: list[dict[str, Any]] | None
    problem: str | None = None
    #: a ``{"text": ...}`` line's text (read with ``text=True`` only)
    text: str | None = None


def text_problem(record: object) -> str | None:
    """Why ``record`` is not a ``{"text": ...}`` example, or None when it is one."""
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        return '"text" is not a string'
    if not text.strip():
        return '"text" is empty (nothing to learn from)'
    if not _is_text(text):
        return '"text" holds a lone surrogate (an escape such as \\ud800), which is not text'
    return None


#: the longest line read as one example (a chat example is a few kB; a longer line is reported, not read whole)
MAX_LINE = 16 << 20


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lines(f) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of ``f``; None for a line longer than MAX_LINE (skipped, never held)."""
    lineno = 0
    while True:
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # the rest of the long line
                raw = f.readline(MAX_LINE)
            yield lineno, None
        else:
            yield lineno, raw


class _Refused(ValueError):
    """JSON that Python's parser accepts but a data line may not hold."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):  # {"content": "a", "content": "b"}: the reader would see "b", a person "a"
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"duplicate key {json.dumps(key)} in one object (which one counts is not defined)")
    return record


def read_examples(
    path: Path, task: str = "instruction_tuning", labels: tuple[str, ...] | None = None
) -> Iterator[ChatLine]:
    """Every non-blank line of ``path`` read as ``task`` trains on it: instruction_tuning takes conversations that
    hold an assistant answer; causal_lm takes any conversation and ``{"text": ...}`` lines; classification (with
    its ``labels``) takes conversations whose last message is the assistant's answer, a label (and optionally a line
    of categories after it: :func:`label_problem`); preference_tuning takes pairs (:func:`read_preference_pairs`),
    each line's messages its chosen conversation."""
    if TASKS[task].pairs:  # each pair counted as one example: its chosen conversation stands for it here
        return (ChatLine(pair.line, pair.chosen, pair.problem) for pair in read_preference_pairs(path))
    causal = TASKS[task].every_token
    lines = read_chat_jsonl(path, require_answer=not causal, text=causal)
    if labels is None:
        return lines
    return (_labelled(item, labels) for item in lines)


def _labelled(item: ChatLine, labels: tuple[str, ...]) -> ChatLine:
    reason = None if item.messages is None else label_problem(item.messages, labels)
    return item if reason is None else ChatLine(item.line, None, reason)


#: labels named one by one in a problem (a classifier may have up to a thousand)
_LABELS_SHOWN = 10


def answer_label(answer: str) -> tuple[str, str | None]:
    """A classifier's answer split into its class and its category line: ``"unsafe\nS1,S3"`` is ``("unsafe",
    "S1,S3")``, ``"safe"`` is ``("safe", None)``. The class is the first line; whatever follows the first newline
    (Llama Guard's line of violated categories) is the second field, trained as text after the label."""
    label, newline, rest = answer.partition("\n")
    return label, rest if newline else None


def label_problem(messages: list[dict[str, Any]], labels: tuple[str, ...]) -> str | None:
    """Why a conversation is not a classifier's example, or None when it is one: its last message is the
    assistant's answer, whose first line is exactly one of ``labels``, optionally followed by one non-blank line
    (the categories, :func:`answer_label`)."""
    last = messages[-1]
    if last["role"] != "assistant":
        return f"the last message is the {last['role']}'s; a classifier's example ends with the assistant's label"
    label, rest = answer_label(last["content"])
    if label in labels:
        if rest is None:
            return None
        if not rest.strip() or "\n" in rest:
            shown = json.dumps(rest if len(rest) <= 40 else rest[:40] + "...")
            return (
                f"the answer's line after its label {json.dumps(label)} is {shown}; it may hold one non-blank line "
                "(the categories)"
            )
        return None
    answer = label if len(label) <= 40 else label[:40] + "..."
    shown = ", ".join(json.dumps(label) for label in labels[:_LABELS_SHOWN])
    more = f" and {len(labels) - _LABELS_SHOWN} more" if len(labels) > _LABELS_SHOWN else ""
    which = "the final answer" if rest is None else "the final answer's first line"
    return f"{which} {json.dumps(answer)} is not exactly one of the labels ({shown}{more})"


def _records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, the line's JSON value, None) for every non-blank line of ``path``, in order, or (line number,
    None, why the line is not JSON a data line may hold)."""
    with open(path, "rb") as f:
        for lineno, raw in _lines(f):
            if raw is None:
                yield lineno, None, f"longer than {MAX_LINE >> 20} MiB (one chat example per line)"
                continue
            if not raw.strip():
                continue
            record, reason = None, None
            try:
                # a column past the line's end is still on this line
                record = finite_json(raw.rstrip(b"\r\n"), object_pairs_hook=_object)
            except (_Refused, NotFinite) as exc:
                reason = str(exc)
            except json.JSONDecodeError as exc:
                reason = f"not valid JSON ({exc.msg} at column {exc.colno})"
            except UnicodeDecodeError:
                reason = "not UTF-8 text"
            except RecursionError:
                reason = "nested too deeply to be a chat example"
            yield lineno, record, reason


def read_chat_jsonl(path: Path, require_answer: bool = True, text: bool = False) -> Iterator[ChatLine]:
    """Every non-blank line of ``path``, in order, parsed and checked (see :func:`message_problem`); with ``text``
    a line may be ``{"text": ...}`` instead (:func:`text_problem`)."""
    for lineno, record, reason in _records(path):
        as_text = reason is None and text and isinstance(record, dict) and "messages" not in record
        if reason is None:
            if as_text and "text" not in record:
                reason = 'neither "messages" (a chat example) nor "text" (a text example)'
            else:
                reason = text_problem(record) if as_text else message_problem(record, require_answer)
        if reason is None and as_text:
            yield ChatLine(lineno, None, None, record["text"])
        else:
            yield ChatLine(lineno, record["messages"] if reason is None else None, reason)


@dataclass(frozen=True)
class PreferenceLine:
    """One non-blank line of a preference-pair file: its two conversations, or why it is not a pair (then both are
    None)."""

    line: int
    #: the conversation ending with the preferred final answer
    chosen: list[dict[str, Any]] | None
    #: the same conversation ending with the other final answer
    rejected: list[dict[str, Any]] | None
    problem: str | None = None


def read_preference_pairs(path: Path) -> Iterator[PreferenceLine]:
    """Every non-blank line of ``path``, in order, read as a preference pair and checked (:func:`pair_problem`);
    read as bounded and with the same problems for bad JSON as :func:`read_chat_jsonl`."""
    for lineno, record, reason in _records(path):
        reason = reason or pair_problem(record)
        if reason is None:
            yield PreferenceLine(lineno, record["chosen"], record["rejected"])
        else:
            yield PreferenceLine(lineno, None, None, reason)


def pair_problem(record: object) -> str | None:
    """Why ``record`` (one parsed line) is not a preference pair, or None when it is one: ``"chosen"`` and
    ``"rejected"`` each a conversation (:func:`message_problem`) ending with the assistant's answer, the two the same
    but for that final answer, and the two answers different. Other keys of the line are not read (llmforge's pair
    files carry scores beside the pair)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [side for side in PAIR_SIDES if side not in record]
    if missing:
        found = ' (a {"messages": ...} line is one conversation; a pair holds two)' if "messages" in record else ""
        return " and ".join(f'no "{side}"' for side in missing) + " conversation" + "s" * (len(missing) > 1) + found
    for side in PAIR_SIDES:
        conversation = record[side]
        reason = message_problem({"messages": conversation}, require_answer=False)
        if reason is not None:
            return reason.replace('"messages"', f'"{side}"').replace("messages[", f"{side}[")
        if conversation[-1]["role"] != "assistant":
            return f'"{side}" ends with a {conversation[-1]["role"]} message, not the assistant\'s final answer'
    before = [record[side][:-1] for side in PAIR_SIDES]  # the conversation before each final answer
    for i in range(max(map(len, before))):
        a, b = (turns[i] if i < len(turns) else None for turns in before)
        if a is None or b is None or (a["role"], a["content"]) != (b["role"], b["content"]):
            return f'"chosen" and "rejected" differ at message [{i}]; a pair differs only in its final answer'
    chosen, rejected = (record[side][-1]["content"].strip() for side in PAIR_SIDES)
    if chosen == rejected:
        return "the chosen and the rejected final answers are the same text (nothing to prefer)"
    return None


def check_chat_jsonl(
    path: Path, task: str = "instruction_tuning", labels: tuple[str, ...] | None = None
) -> ChatDataReport:
    """Read every line of ``path`` as ``task`` trains on it (a classifier's with its ``labels``); count the examples
    and find the first bad lines. Blank lines are allowed."""
    records, count, bad = 0, 0, []
    for item in read_examples(path, task, labels):
        if item.problem is None:
            records += 1
            continue
        count += 1
        if len(bad) < MAX_REPORTED:
            bad.append((item.line, item.problem))
    return ChatDataReport(records=records, bad_lines=count, bad=tuple(bad))
