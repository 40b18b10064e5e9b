"""Batches of tokenized examples, in two layouts. Padded: one example per row, padded to the longest row (or
context_length). Packed: examples concatenated into rows of up to context_length tokens, position ids restarting at
0 for each example and no attention mask, so transformers builds a block-diagonal causal mask: packed examples never
attend to each other. Either way the labels are the tokens of assistant turns, -100 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .tokens import Examples

__all__ = ["IGNORE", "Batch", "Row", "collate", "epoch_rows", "group", "shard_rows"]

IGNORE = -100

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
