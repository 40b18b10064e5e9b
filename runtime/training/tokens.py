"""Chat data for training: each example rendered and tokenized once per input digest (cached as safetensors), with
the mask of the tokens the loss is computed on; examples checked against the context length.

What is trained depends on the task: instruction_tuning trains the assistant turns; causal_lm trains every token of
every example (a conversation rendered by the template as a server renders it, or a ``{"text": ...}`` line, which
is tokenized as the tokenizer encodes text, with its special tokens, such as Llama's BOS, and its EOS appended when
the tokenizer does not end with it, so packed documents stay apart); classification trains the final answer's label
token alone (one token: :func:`label_token_ids`), not the end-of-turn text after it, as llmforge trained it: a
classifier's answer is read from that one position, and nothing after it is generated. An answer with a line of
categories after its label (Llama Guard's ``unsafe\nS1,S3``) trains the label token and the rest of the answer with
its end of turn, as instruction tuning trains an answer: the categories are generated after the label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftc.errors import DataInvalid
from ftc.spec.chat_data import ChatLine, answer_label, read_examples
from ftc.spec.plan import PlanInput
from ftc.spec.tasks import TASKS

from .cache_files import CacheEntry, read_cache_file, store_cache_file
from .render import Rendered
from .sandbox import TemplateRefused

__all__ = [
    "BadExample",
    "Examples",
    "cache_key",
    "label_token_ids",
    "token_cache",
    "tokenize_file",
    "trained_mask",
    "usable_examples",
]

_FORMAT = 3  # bump when the tokenized layout or the masking rules change (of every task; one task's: its key)


@dataclass(frozen=True)
class BadExample:
    line: int
    reason: str
    #: not bad: longer than the ``max_chars`` a caller asked for, so never tokenized (``ftc data inspect``)
    untokenized: bool = False


@dataclass
class Examples:
    """Tokenized examples of one file: token ids and trainable-token mask per example, and its source line."""

    ids: list[np.ndarray]
    trainable: list[np.ndarray]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def subset(self, keep: Sequence[int]) -> Examples:
        return Examples([self.ids[i] for i in keep], [self.trainable[i] for i in keep], [self.lines[i] for i in keep])


def cache_key(data_digest: str, tokenizer_files: Any, renderer_key: Any) -> str:
    """Identity of a tokenization: the data, the tokenizer (its files' digests), the rendering and this format."""
    blob = json.dumps([_FORMAT, data_digest, tokenizer_files, renderer_key], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def trained_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, int | None]:
    """Which tokens (their character ``offsets``) the loss is computed on: every token that overlaps a loss span,
    so a token that begins before the span (` safe` after a template's space) is trained with the text it carries.
    Also the index of the first span no token overlaps (None: every one has tokens)."""
    starts = np.asarray([s for s, _ in offsets], dtype=np.int64)
    ends = np.asarray([e for _, e in offsets], dtype=np.int64)
    mask = np.zeros(len(starts), dtype=bool)
    empty = None
    for i, (a, b) in enumerate(spans):
        hit = (starts < b) & (ends > a) & (ends > starts)
        if empty is None and not hit.any():
            empty = i
        mask |= hit
    return mask, empty


def tokenize_file(
    path: Path,
    *,
    render: Callable[[list[dict[str, Any]]], Rendered],
    tokenizer: Any,
    cache_file: Path | None,
    max_chars: int | None = None,
    task: str = "instruction_tuning",
    labels: tuple[str, ...] | None = None,
    side: str | None = None,
    before_store: Callable[[], None] | None = None,
) -> tuple[Examples, list[BadExample]]:
    """Tokenize every example of ``path`` (or load the result cached for the same data, tokenizer and format, once
    its bytes verify). ``max_chars``: an example whose rendered text is longer is not tokenized (tokenizing 16 MiB
    takes a minute) but listed as ``untokenized``, and then nothing is cached (a run must see every example).
    ``task``: causal_lm trains every token, classification (with its ``labels``) the label token alone (see the
    module's docstring). ``side`` (``chosen`` or ``rejected``): ``path`` holds preference pairs, and each pair's
    conversation on that side is tokenized, its final answer alone trained (the answer the pair compares).
    ``before_store``: called before anything is cached, to raise if what was read may not be what the cache is
    keyed by (the input's pinned digest)."""
    if cache_file is not None:
        cached = read_cache_file(cache_file, _load)
        if cached is not None:
            return cached
    texts: list[Rendered] = []
    lines: list[int] = []
    finals: list[str] = []  # each example's final answer (a classifier's label, and its categories)
    bad: list[BadExample] = []
    raw: set[int] = set()  # the indices in ``texts`` of {"text": ...} lines
    for item in read_examples(path, task, labels) if side is None else _side_of_pairs(path, side):
        reason = item.problem
        if reason is None and item.text is not None:
            raw.add(len(texts))
            texts.append(Rendered(item.text, ((0, len(item.text)),)))
            lines.append(item.line)
            finals.append("")
            continue
        if reason is None:
            try:
                rendered = render(item.messages)
            except TemplateRefused as exc:  # the template is at fault, not this example: every one would fail
                raise TemplateRefused(f"{path}:{item.line}: {exc}") from None
            except DataInvalid as exc:
                reason = str(exc)
            else:
                if max_chars is not None and len(rendered.text) > max_chars:
                    size = f"{len(rendered.text):,} characters rendered, more than the {max_chars:,} tokenized here"
                    bad.append(BadExample(item.line, size, untokenized=True))
                    continue
                texts.append(rendered)
                lines.append(item.line)
                finals.append(item.messages[-1]["content"])
        if reason is not None:
            bad.append(BadExample(item.line, reason))
    examples = Examples([], [], [])
    every_token = TASKS[task].every_token
    label_ids = dict(zip(labels, label_token_ids(tokenizer, labels))) if labels is not None else {}
    for start in range(0, len(texts), 1024):
        chunk = texts[start : start + 1024]
        encoded = _encode(tokenizer, chunk, {i - start for i in raw if start <= i < start + len(chunk)})
        for r, (ids, offsets), lineno, final in zip(chunk, encoded, lines[start:], finals[start:]):
            ids = np.asarray(ids, dtype=np.int32)
            mask, reason = _mask(
                r, ids, offsets, final, every_token=every_token, label_ids=label_ids, final_only=side is not None
            )
            if reason is not None:
                bad.append(BadExample(lineno, reason))
                continue
            examples.ids.append(ids)
            examples.trainable.append(mask)
            examples.lines.append(lineno)
    bad.sort(key=lambda b: b.line)
    if cache_file is not None and not any(b.untokenized for b in bad):
        if before_store is not None:
            before_store()
        _store(cache_file, examples, bad)
    return examples, bad


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """Each label's token id, in ``labels``' order: the one token the tokenizer encodes it as (the model's loader
    adds a label that is not one token as a special token). A label that is still not one token: ValueError."""
    out = []
    for label in labels:
        ids = tokenizer.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the label {label!r} is {len(ids)} tokens, not one, for this tokenizer")
        out.append(ids[0])
    return out


def _mask(
    rendered: Rendered,
    ids: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    final: str,
    *,
    every_token: bool,
    label_ids: dict[str, int],
    final_only: bool = False,
) -> tuple[np.ndarray, str | None]:
    """The trained-token mask of one example, or why it has none: every token (causal_lm), a classifier's label
    (with ``label_ids``; ``final`` is its final answer), else the template's loss spans (the assistant turns; with
    ``final_only``, the final answer's alone)."""
    if every_token:
        return np.ones(len(ids), dtype=bool), None
    if label_ids:
        return _label_mask(rendered, ids, offsets, answer_label(final), label_ids)
    spans = rendered.loss_spans[-1:] if final_only else rendered.loss_spans
    mask, empty_turn = trained_mask(offsets, spans)
    if empty_turn is not None:
        which = "the final answer" if final_only else f"assistant turn {empty_turn + 1}"
        return mask, f"{which} has no token after tokenization"
    return mask, None


def _side_of_pairs(path: Path, side: str) -> Iterator[ChatLine]:
    """Each preference pair of ``path`` as the conversation on its ``side`` (or why the pair is not one)."""
    from ftc.spec.chat_data import read_preference_pairs

    for pair in read_preference_pairs(path):
        messages = getattr(pair, side) if pair.problem is None else None
        yield ChatLine(pair.line, messages, pair.problem)


def _label_mask(
    rendered: Rendered,
    ids: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    answer: tuple[str, str | None],
    label_ids: dict[str, int],
) -> tuple[np.ndarray, str | None]:
    """The mask of a classifier's example whose final ``answer`` is (label, categories or None): its label token
    alone, or with categories the label token and the rest of the answer's span (its end of turn included); else
    why there is none (the template renders the label so that it is not its own token)."""
    start, end = rendered.loss_spans[-1]
    label, categories = answer
    if not rendered.text.startswith(label, start):
        mask = np.zeros(len(ids), dtype=bool)
        shown = rendered.text[start:end][:40]
        return mask, f"the template renders the answer so that it does not begin with its label ({shown!r})"
    alone, _ = trained_mask(offsets, [(start, start + len(label))])
    hit = np.flatnonzero(alone)
    if len(hit) != 1 or int(ids[hit[0]]) != label_ids[label]:
        tokens = [rendered.text[offsets[i][0] : offsets[i][1]] for i in hit]
        return alone, f"the label {label!r} is not its own token where the template renders it: tokens {tokens!r}"
    if categories is None:
        return alone, None
    whole, _ = trained_mask(offsets, [(start, end)])  # from the label's token on: it is the span's first
    return whole, None


def _encode(tokenizer: Any, chunk: list[Rendered], raw: set[int]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """(token ids, character offsets) of each rendered text of ``chunk``: a template's rendering as it is (its
    special tokens are in the text); the ``raw`` ones ({"text": ...} lines) as the tokenizer encodes text, with its
    special tokens, and its EOS appended unless the tokenizer ends with it."""
    out: list[tuple[list[int], list[tuple[int, int]]]] = [([], [])] * len(chunk)
    for special, picked in ((False, [i for i in range(len(chunk)) if i not in raw]), (True, sorted(raw))):
        if not picked:
            continue
        encoded = tokenizer([chunk[i].text for i in picked], add_special_tokens=special, return_offsets_mapping=True)
        for i, ids, offsets in zip(picked, encoded["input_ids"], encoded["offset_mapping"]):
            ids, offsets = list(ids), list(offsets)
            eos = tokenizer.eos_token_id
            if special and eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
                offsets.append((len(chunk[i].text), len(chunk[i].text)))
            out[i] = (ids, offsets)
    return out


def _store(path: Path, examples: Examples, bad: list[BadExample]) -> None:
    lengths = examples.lengths
    tensors = {
        "ids": np.concatenate(examples.ids) if len(examples) else np.zeros(0, np.int32),
        "trainable": (np.concatenate(examples.trainable) if len(examples) else np.zeros(0, bool)).astype(np.uint8),
        "lengths": lengths,
        "lines": np.asarray(examples.lines, dtype=np.int64),
    }
    store_cache_file(path, tensors, {"bad": json.dumps([[b.line, b.reason] for b in bad])})


def _load(entry: CacheEntry) -> tuple[Examples, list[BadExample]]:
    tensors = entry.tensors
    ids, trainable = tensors["ids"], tensors["trainable"].astype(bool)
    lengths, lines = tensors["lengths"], tensors["lines"]
    bad = [BadExample(int(line), str(reason)) for line, reason in json.loads(entry.metadata["bad"])]
    if not (len(lengths) == len(lines) and int(lengths.sum()) == len(ids) == len(trainable)):
        raise ValueError("its tensors do not fit together")
    cuts = np.cumsum(lengths)[:-1]
    return Examples(
        list(np.split(ids, cuts)) if len(lengths) else [],
        list(np.split(trainable, cuts)) if len(lengths) else [],
        [int(x) for x in lines],
    ), bad


def usable_examples(
    examples: Examples, bad: list[BadExample], *, context_length: int, skip: bool, display: str
) -> tuple[Examples, int]:
    """The examples that fit ``context_length``. Without ``skip``, any bad example stops the run with file:line."""
    too_long = [i for i, n in enumerate(examples.lengths) if n > context_length]
    problems = bad + [
        BadExample(examples.lines[i], f"{examples.lengths[i]} tokens, longer than context_length {context_length}")
        for i in too_long
    ]
    problems.sort(key=lambda b: b.line)
    if problems and not skip:
        first = problems[0]
        more = f" ({len(problems) - 1} more bad examples)" if len(problems) > 1 else ""
        raise DataInvalid(
            f"{display}:{first.line}: {first.reason}{more}"
            "\n    fix: correct the data, raise context_length, or set skip_bad_examples: true"
        )
    drop = set(too_long)
    kept = examples.subset([i for i in range(len(examples)) if i not in drop])
    if len(kept) == 0:
        raise DataInvalid(f"{display}: no usable examples ({len(problems)} bad)")
    return kept, len(problems)


def token_cache(
    data: PlanInput,
    tokenizer_folder: PlanInput | None,
    renderer: Any,
    task: str = "instruction_tuning",
    labels: Sequence[str] | None = None,
    side: str | None = None,
) -> Path | None:
    """Where the tokenized ``data`` input is cached: keyed by its digest, the tokenizer's files, the rendering and
    what the task trains (a classifier's labels, which its tokenizer gains too; a preference pair's ``side``). None
    when the tokenizer is not pinned (the published one of a hub model)."""
    from ftc.stores.hashing import cache_dir

    if tokenizer_folder is None or not tokenizer_folder.files:
        return None
    tokenizer = sorted(
        [f.path, f.sha256, dict(f.pin) if f.pin is not None else None]
        for f in tokenizer_folder.files
        if not f.path.endswith(".safetensors")
    )
    if task != "instruction_tuning":  # (instruction tuning's keys as they were before tasks: its caches stay valid)
        # a classifier's masks: its label, and (since the key says "categories") the category line after it
        classes = [list(labels), "categories"] if labels is not None else []
        renderer = [renderer, task] + classes + ([side] if side else [])
    return cache_dir() / "tokens" / f"{cache_key(data.digest, tokenizer, renderer)}.safetensors"
