"""``ftc generate`` and ``ftc eval``: a checkpoint (adapter on its exact base, unmerged) or an export, prompted as a
server prompts it, answers streamed as they are generated; or scored by exact match against reference answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import DataInvalid, InputChanged, UsageError
from ftc.spec.chat_data import read_chat_jsonl
from ftc.spec.reading import regular_file_problem
from ftc.stores.atomic import write_text_atomic
from ftc.stores.hashing import hash_file
from ftc.stores.stamps import ReadRecord, stamp

from .trained import Trained, load_model, open_trained

__all__ = [
    "Session",
    "conversations",
    "conversations_to_answer",
    "data_file",
    "evaluate",
    "load_session",
    "open_session",
]


@dataclass
class Session:
    """A trained model loaded for generation, with its prompt format and stops."""

    trained: Trained
    model: Any
    tokenizer: Any
    stop_ids: list[int]

    @property
    def context(self) -> int | None:
        """The most tokens the model takes (its config's max_position_embeddings), when it says."""
        found = getattr(self.model.config, "max_position_embeddings", None)
        return found if isinstance(found, int) and found > 0 else None

    def prompt(self, messages: list[dict[str, Any]], where: str) -> list[int]:
        """The token ids a server feeds the model for ``messages`` (``where`` names them in errors): refused when
        there is no user turn to answer, or when they leave the model no room for an answer."""
        from ftc.runtime.training.generation import prompt_ids

        if not any(message["role"] == "user" for message in messages):
            roles = ", ".join(message["role"] for message in messages) or "none"
            raise DataInvalid(
                f"{where}: no user turn to answer (the turns before the answer: {roles})\n    fix: give each "
                "conversation a user turn before the assistant turn to answer"
            )
        ids = prompt_ids(messages, self.trained.prompt_format, self.tokenizer)
        context = self.context
        if context is not None and len(ids) >= context:
            raise DataInvalid(
                f"{where}: the prompt is {len(ids):,} tokens, and the model takes at most {context:,} "
                "(max_position_embeddings) with its answer\n    fix: shorten the conversation"
            )
        return ids

    def generate(self, ids: list[int], sampling: Any, on_text: Callable[[str], None] | None = None):
        """The answer to the prompt ``ids`` (from :meth:`prompt`)."""
        from ftc.runtime.training.generation import generate

        return generate(
            self.model, self.tokenizer, ids, stop_texts=self.trained.stop_texts,
            stop_ids=self.stop_ids, sampling=sampling, on_text=on_text,
        )  # fmt: skip


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def open_session(path: Path, *, dtype: str | None = None, device: str | None = None) -> Session:
    """Verify and load the checkpoint or export at ``path``. ``dtype``: float32 on a CPU, bfloat16 on a GPU by
    default."""
    return load_session(open_trained(path), dtype=dtype, device=device)


def load_session(trained: Trained, *, dtype: str | None = None, device: str | None = None) -> Session:
    """Load ``trained`` (verified by :func:`~ftc.serving.trained.open_trained`) as :func:`open_session` does."""
    from transformers.utils import logging

    from ftc.runtime.training.generation import stop_token_ids

    logging.disable_progress_bar()  # the answer is the output; a bar per weights file is noise around it
    where = _device(device)
    model, tokenizer = load_model(trained, dtype=dtype or ("float32" if where == "cpu" else "bfloat16"), device=where)
    return Session(trained, model, tokenizer, stop_token_ids(tokenizer, trained.stop_texts))


def data_file(path: Path) -> Path:
    """``path`` when it is a regular file that can be read; else a UsageError saying what it is."""
    try:
        problem = regular_file_problem(path, path.stat())
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    if problem:
        raise UsageError(problem)
    return path


def hashed_data(path: Path) -> tuple[str, ReadRecord]:
    """The sha256 of the data file ``path`` (a regular file), and the file as it was when hashed: what is read of it
    afterwards is checked against it (:func:`check_read`)."""
    read = ReadRecord({data_file(path): stamp(path)})  # before hashing: a write while it is hashed shows too
    sha, _ = hash_file(path)
    return sha, read


def check_read(path: Path, read: ReadRecord) -> None:
    """Once the data file ``path`` is read: raise :class:`InputChanged` when it changed since it was hashed (the
    results would name a sha256 of other bytes than they are of)."""
    if read.changed():
        raise InputChanged(
            f"{path}: changed while ftc read it, after it was hashed: the results would not be of the bytes their "
            "data_sha256 names\n    fix: evaluate again once nothing writes it"
        )


def conversations(path: Path, *, require_answer: bool) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(line, messages) of every conversation of a chat-JSONL file; a bad line stops with its number and reason."""
    for item in read_chat_jsonl(data_file(path), require_answer=require_answer):
        if item.problem is not None:
            raise DataInvalid(f"{path}:{item.line}: {item.problem}")
        yield item.line, item.messages


def conversations_to_answer(path: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(where, messages) of every conversation of the chat-JSONL file ``path`` to answer, ``where`` as
    ``path:line``: the trailing assistant turns of each are removed, since the answer takes their place."""
    found = []
    for line, messages in conversations(path, require_answer=False):
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        found.append((f"{path}:{line}", messages))
    return found


def evaluate(session: Session, data: Path, out: Path, *, sampling: Any) -> dict[str, Any]:
    """Answer every example of ``data`` in place of its last assistant turn; write one JSON line per example to
    ``out`` (atomically) and return the aggregate. Answering takes a while: its progress goes to stderr once it runs
    for more than a few seconds (``CountProgress``)."""
    from ftc.runtime.training.generation import Answer
    from ftc.runtime.training.progress import CountProgress

    trained = session.trained
    sha, read = hashed_data(data)  # what was answered: the file as it was before reading it
    rows = []
    # every prompt is checked before the first answer is generated
    prompts = []
    for line, messages in conversations(data, require_answer=True):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append((line, session.prompt(messages[:last], f"{data}:{line}"), messages[last]["content"]))
    check_read(data, read)
    with CountProgress(len(prompts), "evaluation (exact match)", "answer") as shown:
        for line, ids, expected in prompts:
            result = Answer(expected, session.generate(ids, sampling))
            rows.append({
                "line": line, "expected": result.expected, "output": result.generated.text,
                "exact_match": result.exact_match, "finish_reason": result.generated.finish_reason,
                "tokens": result.generated.tokens,
            })  # fmt: skip
            shown.update()
    if not rows:
        raise DataInvalid(f"{data}: no examples")
    write_text_atomic(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    matched = sum(row["exact_match"] for row in rows)
    return {
        **trained.identity(), "data": str(data),
        "data_sha256": f"sha256:{sha}", "examples": len(rows), "exact_match": matched / len(rows),
        "exact_matches": matched, "max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
        "outputs": str(out),
    }  # fmt: skip
