"""One optimizer step of a token-loss recipe, as the device sees it: every micro-batch's forward and backward, then
the engine's step, queued without the host waiting for the device. On one process the only wait is the caller's,
when it reads the step's loss (``StepLoss.value``); on several, the step's token counts are summed across them
first (a second wait). DeepSpeed's own (in bf16 its overflow check and clipping) come on top, counted by the tests
(tests/unit/runtime/test_step_syncs.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .batches import Batch, to_device
from .distributed import Dist

__all__ = ["Prefetched", "StepLoss", "train_step"]


@dataclass
class StepLoss:
    """The summed loss of a step (still on the device, this rank's), what it is a sum over (``count``: the loss's
    tokens, or a preference step's pairs; every rank's) and the step's tokens that are not padding (every rank's)."""

    total: Any
    count: int
    real_tokens: int

    def value(self, dist: Dist) -> float:
        """The step's mean loss over every rank: the step's one wait for the device."""
        (summed,) = dist.sum(self.total.item())
        return summed / max(self.count, 1)


def train_step(engine: Any, token_loss: Any, micro_batches: list[Batch], dist: Dist) -> StepLoss:
    """Forward and backward of ``micro_batches`` (this rank's), then ``engine.step()``. Every token of the global
    step weighs the same, whatever its micro-batch or rank: the summed loss is scaled by the step's token count
    (DeepSpeed averages gradients over ranks, hence * world)."""
    import torch

    loss_tokens, real_tokens = dist.sum(
        sum(b.loss_tokens for b in micro_batches), sum(b.real_tokens for b in micro_batches)
    )
    scale = dist.world / max(loss_tokens, 1)
    total = torch.zeros((), dtype=torch.float32, device=dist.device)
    for batch in micro_batches:
        inputs, labels, rows = to_device(batch, dist.device)
        loss = token_loss(engine, inputs, labels, rows)
        engine.backward(loss * scale, scale_wrt_gas=False)
        total += loss.detach()
    engine.step()
    return StepLoss(total, int(loss_tokens), int(real_tokens))


class Prefetched:
    """An epoch's steps as collated micro-batches, the next step's collated in a thread while this one trains (on a
    GPU the host would otherwise collate while the device waits): ``steps[i]`` is step ``i``'s batches, and asks for
    step ``i + 1``'s. Any order of access works; only the next step is collated ahead. On a GPU the batches come in
    pinned memory, so their copies to the device are queued without waiting. A batch is a ``Batch``, or anything
    else with its ``pin()`` (a preference step's ``PairBatch``)."""

    def __init__(self, steps: Sequence[Any], collate: Callable[[Any], list[Any]], *, pin: bool = False) -> None:
        self.steps, self.collate, self.pin = steps, collate, pin
        self._ahead: tuple[int, Future] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> list[Any]:
        ahead, self._ahead = self._ahead, None
        batches = ahead[1].result() if ahead is not None and ahead[0] == i else self._collated(i)
        if i + 1 < len(self.steps):
            self._ahead = (i + 1, _collator().submit(self._collated, i + 1))
        return batches

    def _collated(self, i: int) -> list[Any]:
        batches = self.collate(self.steps[i])
        if self.pin:
            for batch in batches:
                batch.pin()
        return batches


@functools.cache
def _collator() -> ThreadPoolExecutor:
    """The one thread that collates ahead (per process)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftc-collate")
