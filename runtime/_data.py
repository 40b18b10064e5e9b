"""Chat data for training: tokenize once per input digest (cached), check lengths, and lay out batches.

Batches come in two layouts. Padded: one example per row, padded to the longest row (or context_length).
Packed: examples concatenated into rows of up to context_length tokens, position ids restarting at 0 for each
example and no attention mask, so transformers builds a block-diagonal causal mask: packed examples never
attend to each other. Either way the labels are the tokens of assistant turns, -100 elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ftc.compiler._data import message_problem
from ftc.errors import DataInvalid

from ._render import Rendered

__all__ = ["Examples", "BadExample", "tokenize_file", "usable_examples", "epoch_rows", "shard_rows", "group", "collate"]

IGNORE = -100
_FORMAT = 1  # bump when the tokenized layout or the masking rules change


@dataclass(frozen=True)
class BadExample:
    line: int
    reason: str


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

    def subset(self, keep: Sequence[int]) -> "Examples":
        return Examples([self.ids[i] for i in keep], [self.trainable[i] for i in keep], [self.lines[i] for i in keep])


def cache_key(data_digest: str, tokenizer_files: Any, renderer_key: Any) -> str:
    """Identity of a tokenization: the data, the tokenizer (its files' digests), the rendering and this format."""
    blob = json.dumps([_FORMAT, data_digest, tokenizer_files, renderer_key], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def tokenize_file(
    path: Path,
    *,
    render: Callable[[list[dict[str, Any]]], Rendered],
    tokenizer: Any,
    cache_file: Path | None,
) -> tuple[Examples, list[BadExample]]:
    """Tokenize every example of ``path`` (or load the result cached for the same data, tokenizer and format)."""
    if cache_file is not None and cache_file.exists():
        return _load(cache_file)
    texts: list[Rendered] = []
    lines: list[int] = []
    bad: list[BadExample] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                reason = message_problem(record)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = f"not valid JSON ({exc})"
            if reason is None:
                try:
                    texts.append(render(record["messages"]))
                    lines.append(lineno)
                except DataInvalid as exc:
                    reason = str(exc)
            if reason is not None:
                bad.append(BadExample(lineno, reason))
    examples = Examples([], [], [])
    for start in range(0, len(texts), 1024):
        chunk = texts[start : start + 1024]
        encoded = tokenizer([r.text for r in chunk], add_special_tokens=False, return_offsets_mapping=True)
        for r, ids, offsets, lineno in zip(chunk, encoded["input_ids"], encoded["offset_mapping"], lines[start:]):
            ids = np.asarray(ids, dtype=np.int32)
            starts = np.asarray([s for s, _ in offsets], dtype=np.int64)
            ends = np.asarray([e for _, e in offsets], dtype=np.int64)
            mask = np.zeros(len(ids), dtype=bool)
            for a, b in r.loss_spans:
                mask |= (starts >= a) & (starts < b) & (ends > starts)
            if not mask.any():
                bad.append(BadExample(lineno, "no assistant tokens after tokenization"))
                continue
            examples.ids.append(ids)
            examples.trainable.append(mask)
            examples.lines.append(lineno)
    bad.sort(key=lambda b: b.line)
    if cache_file is not None:
        _store(cache_file, examples, bad)
    return examples, bad


def _store(path: Path, examples: Examples, bad: list[BadExample]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = examples.lengths
    tensors = {
        "ids": np.concatenate(examples.ids) if len(examples) else np.zeros(0, np.int32),
        "trainable": (np.concatenate(examples.trainable) if len(examples) else np.zeros(0, bool)).astype(np.uint8),
        "lengths": lengths,
        "lines": np.asarray(examples.lines, dtype=np.int64),
    }
    meta = {"bad": json.dumps([[b.line, b.reason] for b in bad])}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)  # readers never see a half-written cache file
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path) -> tuple[Examples, list[BadExample]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        ids, trainable = f.get_tensor("ids"), f.get_tensor("trainable").astype(bool)
        lengths, lines = f.get_tensor("lengths"), f.get_tensor("lines")
        bad = [BadExample(int(line), reason) for line, reason in json.loads(f.metadata()["bad"])]
    cuts = np.cumsum(lengths)[:-1]
    return Examples(list(np.split(ids, cuts)) if len(lengths) else [], list(np.split(trainable, cuts)) if len(lengths) else [], [int(x) for x in lines]), bad


def usable_examples(examples: Examples, bad: list[BadExample], *, context_length: int, skip: bool, display: str) -> tuple[Examples, int]:
    """The examples that fit ``context_length``. Without ``skip``, any bad example stops the run with file:line."""
    too_long = [i for i, n in enumerate(examples.lengths) if n > context_length]
    problems = bad + [BadExample(examples.lines[i], f"{examples.lengths[i]} tokens, longer than context_length {context_length}") for i in too_long]
    problems.sort(key=lambda b: b.line)
    if problems and not skip:
        first = problems[0]
        more = f" ({len(problems) - 1} more bad examples)" if len(problems) > 1 else ""
        raise DataInvalid(f"{display}:{first.line}: {first.reason}{more}\n    fix: correct the data, raise context_length, or set skip_bad_examples: true")
    drop = set(too_long)
    kept = examples.subset([i for i in range(len(examples)) if i not in drop])
    if len(kept) == 0:
        raise DataInvalid(f"{display}: no usable examples ({len(problems)} bad)")
    return kept, len(problems)


Row = tuple[int, ...]  # indices of the examples in one row of a batch


def epoch_rows(lengths: np.ndarray, *, epoch: int, seed: int, shuffle: bool, pack_to: int | None) -> list[Row]:
    """The rows of one epoch: a seeded permutation of the examples, each in its own row or packed (next-fit)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    if pack_to is None:
        return [(int(i),) for i in order]
    rows: list[Row] = []
    current: list[int] = []
    used = 0
    for i in order:
        n = int(lengths[i])
        if current and used + n > pack_to:
            rows.append(tuple(current))
            current, used = [], 0
        current.append(int(i))
        used += n
    if current:
        rows.append(tuple(current))
    return rows


def shard_rows(rows: list[Row], rank: int, world: int) -> list[Row]:
    """This rank's rows; the list is first extended by repeating its head so every rank gets as many rows."""
    if world == 1:
        return rows
    short = -len(rows) % world
    rows = rows + rows[:short]
    return rows[rank::world]


def group(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class Batch:
    inputs: dict[str, Any]  # tensors for the model's forward
    labels: Any
    real_tokens: int  # tokens that are not padding
    loss_tokens: int  # tokens the loss is computed on (after the shift)


def collate(rows: list[Row], examples: Examples, *, pad_id: int, packed: bool, pad_to: int | None = None) -> Batch:
    """Tensors for one micro-batch of ``rows``."""
    import torch

    seqs, labels, positions = [], [], []
    for row in rows:
        ids = np.concatenate([examples.ids[i] for i in row])
        lab = np.concatenate([np.where(examples.trainable[i], examples.ids[i], IGNORE) for i in row]).astype(np.int64)
        pos = np.concatenate([np.arange(len(examples.ids[i])) for i in row])
        start = 0
        for i in row:  # the first token of each example is never predicted from the example before it
            lab[start] = IGNORE
            start += len(examples.ids[i])
        seqs.append(ids)
        labels.append(lab)
        positions.append(pos)
    width = max(pad_to or 0, max(len(s) for s in seqs))
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    label_t = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    pos_t = torch.zeros((n, width), dtype=torch.long)
    for r, (ids, lab, pos) in enumerate(zip(seqs, labels, positions)):
        k = len(ids)
        input_ids[r, :k] = torch.from_numpy(ids.astype(np.int64))
        label_t[r, :k] = torch.from_numpy(lab)
        mask[r, :k] = 1
        pos_t[r, :k] = torch.from_numpy(pos)
        pos_t[r, k:] = torch.arange(width - k)  # padding is a segment of its own
    real = int(mask.sum())
    loss_tokens = int((label_t[:, 1:] != IGNORE).sum())
    if packed:
        inputs = {"input_ids": input_ids, "position_ids": pos_t}
    else:
        inputs = {"input_ids": input_ids, "attention_mask": mask}
    return Batch(inputs, label_t, real, loss_tokens)
