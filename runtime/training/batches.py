"""Batches of tokenized examples, in three layouts. Padded: one example per row, padded to the longest row (or
context_length). Packed: examples concatenated into rows of up to context_length tokens, position ids restarting at
0 for each example and no attention mask, so transformers builds a block-diagonal causal mask: packed examples never
attend to each other. Flat (ftc's varlen attention's, packed or not): the micro-batch's rows laid end to end in one
row with no padding at all (``padding: max_length``: padded at its end to the rows' fixed width, the padding in
samples of its own), and the samples' bounds computed here, once, for every layer's attention
(``cu_seq_lens_q`` on the device for a varlen kernel, ``sample_bounds`` on the host for a loop over samples): the
rows only decide which examples train together. Either way the labels are the tokens of assistant turns, -100
elsewhere, and the positions the loss is computed on are found here too, so no step waits for the device to find
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .tokens import Examples

__all__ = ["IGNORE", "Batch", "Row", "SampleBounds", "collate", "epoch_rows", "group", "shard_rows", "to_device"]

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


class SampleBounds:
    """Where each sample of a flat row starts, and the row's length (``offsets``: 0, ..., length), as the host knows
    them. An object of its own rather than a tuple: a compiled decoder layer hands it to the attention unread,
    where a tuple's length would be guarded (a recompilation for every count of samples)."""

    __slots__ = ("offsets",)

    def __init__(self, offsets: tuple[int, ...]) -> None:
        self.offsets = offsets

    def __repr__(self) -> str:
        return f"SampleBounds({self.offsets})"


@dataclass
class Batch:
    inputs: dict[str, Any]  # tensors for the model's forward
    labels: Any
    real_tokens: int  # tokens that are not padding
    loss_tokens: int  # tokens the loss is computed on (after the shift)
    #: where in ``labels[:, 1:].reshape(-1)`` the loss is computed (the non-IGNORE positions)
    loss_rows: Any = None

    def pin(self) -> None:
        """Its tensors in page-locked memory, so their copies to a GPU are queued without the host waiting."""
        import torch

        pin = lambda t: t.pin_memory() if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.inputs = {k: pin(v) for k, v in self.inputs.items()}
        self.labels, self.loss_rows = pin(self.labels), pin(self.loss_rows)


def to_device(batch: Batch, device: Any) -> tuple[dict[str, Any], Any, Any]:
    """The batch's model inputs, labels and loss rows on ``device`` (copies queued, not waited for; host values such
    as ``sample_bounds`` stay as they are)."""
    import torch

    move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
    return {k: move(v) for k, v in batch.inputs.items()}, move(batch.labels), move(batch.loss_rows)


def _flat(seqs: list, labels: list, positions: list, *, pad_id: int, width: int | None) -> Batch:
    """One row of every token of the micro-batch, with the samples' bounds for the attention. ``width``: the row
    padded to it (fixed shapes, ``padding: max_length``), the padding in samples of its own, each no longer than the
    longest row (so no longer than the kernel's longest sample already is), attending only to itself, without
    loss."""
    import torch

    real = sum(len(s) for s in seqs)
    if width is not None and width > real:
        piece = max(max(len(s) for s in seqs), 1)
        for size in [piece] * ((width - real) // piece) + [(width - real) % piece]:
            if size:
                seqs, labels = [*seqs, np.full(size, pad_id)], [*labels, np.full(size, IGNORE, dtype=np.int64)]
                positions = [*positions, np.arange(size)]
    ids, lab, pos = (
        torch.from_numpy(np.concatenate(parts).astype(np.int64))[None] for parts in (seqs, labels, positions)
    )
    starts = np.flatnonzero(pos[0].numpy() == 0)
    bounds = tuple(int(b) for b in np.append(starts, pos.shape[1]))
    longest = int(np.diff(bounds).max())
    inputs = {
        "input_ids": ids, "position_ids": pos, "cu_seq_lens_q": torch.tensor(bounds, dtype=torch.int32),
        "max_length_q": longest, "sample_bounds": SampleBounds(bounds),
    }  # fmt: skip
    return _with_loss_rows(Batch(inputs, lab, real, 0))


def _with_loss_rows(batch: Batch) -> Batch:
    import torch

    shifted = batch.labels[:, 1:].reshape(-1)
    batch.loss_rows = torch.from_numpy(np.flatnonzero(shifted.numpy() != IGNORE))
    batch.loss_tokens = len(batch.loss_rows)
    return batch


def collate(
    rows: list[Row], examples: Examples, *, pad_id: int, packed: bool, pad_to: int | None = None, flat: bool = False
) -> Batch:
    """Tensors for one micro-batch of ``rows`` (``flat``: the rows end to end in one, for varlen attention, whether
    they are packed or hold one example each: either way no position is padding, unless ``pad_to`` asks for rows of
    that width: then the one row is as wide as they would be, padded at its end)."""
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
    if flat:
        return _flat(seqs, labels, positions, pad_id=pad_id, width=pad_to * len(rows) if pad_to else None)
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
    real = sum(len(ids) for ids in seqs)
    if packed:
        inputs = {"input_ids": input_ids, "position_ids": pos_t}
    else:
        inputs = {"input_ids": input_ids, "attention_mask": mask}
    return _with_loss_rows(Batch(inputs, label_t, real, 0))
