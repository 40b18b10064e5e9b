"""Preference tuning's pieces (``task: preference_tuning``): pairs of answers to one conversation, the log-probability
of each answer under the model being trained and under its reference, and the pairwise losses with their rewards.

- **Pairs**: each data line holds a ``chosen`` and a ``rejected`` conversation, the same but for the final
  assistant answer. Each side is tokenized through the token cache as any chat data is (``load_data`` with its
  ``side``), its final answer alone trained; a pair is kept when both sides are usable (:func:`load_pairs`).
- **Log-probabilities**: an answer's log-probability is the sum of its tokens' log-probabilities, the template's
  end of turn included (what serving generates); one forward pass over a padded batch of the chosen and the rejected
  answers of the same pairs (:func:`answer_logps`), through the output layer as sft's loss goes (``loss.TokenLoss``:
  chunked, only the answers' positions projected, where the model allows it).
- **The reference** is the model as training starts (the base, or the base with the adapter a stage continues, or
  the whole weights): its log-probabilities are computed once, before the first step, with the weights the run
  loaded (no second copy of the model), and stored in ftc's cache as safetensors, keyed by everything they depend
  on (:mod:`ftc.runtime.training.reference`).
- **Losses** (``loss_type``): ``sigmoid`` is DPO's, ``-log σ(β((π_c - r_c) - (π_r - r_r)))``; ``ipo`` is IPO's
  squared loss on the per-token (length-normalized) log-ratio difference, ``(Δ/n - 1/(2β))²``, as TRL computes both.
  The rewards are ``β (π - r)`` of each answer.
- **A step** (:func:`preference_step`) trains micro-batches collated ahead (:func:`pair_batch`, through
  ``step.Prefetched`` as sft's are): each holds its pairs' indices and their reference log-probabilities, so the
  step itself only queues work; the host waits for the device once, when the caller reads its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .batches import IGNORE, Batch, collate, group, to_device
from .data import load_data
from .distributed import Dist
from .progress import PREFERENCE_SCALARS
from .step import StepLoss
from .tokens import Examples

if TYPE_CHECKING:
    from .inputs import FoundInputs
    from .loss import TokenLoss

__all__ = [
    "PairBatch",
    "Pairs",
    "answer_logps",
    "collate_pairs",
    "load_pairs",
    "pair_batch",
    "pair_metrics",
    "preference_loss",
    "preference_step",
]


@dataclass
class Pairs:
    """Tokenized preference pairs: pair ``i`` is ``chosen`` example ``i`` and ``rejected`` example ``i`` (the same
    data line, ``lines[i]``)."""

    chosen: Examples
    rejected: Examples

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def lines(self) -> list[int]:
        return self.chosen.lines

    @property
    def lengths(self) -> np.ndarray:
        """Each pair's tokens (both answers with their conversation): what batches are balanced by."""
        return self.chosen.lengths + self.rejected.lengths

    @property
    def trained_tokens(self) -> int:
        return sum(int(m.sum()) for m in self.chosen.trainable) + sum(int(m.sum()) for m in self.rejected.trainable)


def load_pairs(
    plan: Any, dist: Dist, paths: FoundInputs, tokenizer: Any, tokenizer_source: str
) -> tuple[dict[str, Pairs], dict[str, int]]:
    """(role -> ``Pairs``, role -> pairs skipped) for each data input of the plan: both sides read as ``load_data``
    reads chat data (the token cache, the context length, ``skip_bad_examples``), a pair kept when both of its
    sides are."""
    chosen, skipped = load_data(plan, dist, paths, tokenizer, tokenizer_source, side="chosen")
    rejected, _ = load_data(plan, dist, paths, tokenizer, tokenizer_source, side="rejected")
    pairs, dropped = {}, {}
    for role, c in chosen.items():
        r = rejected[role]
        both = sorted(set(c.lines) & set(r.lines))
        at_c, at_r = {line: i for i, line in enumerate(c.lines)}, {line: i for i, line in enumerate(r.lines)}
        pairs[role] = Pairs(c.subset([at_c[x] for x in both]), r.subset([at_r[x] for x in both]))
        # a pair bad on the chosen side is counted there; one bad on the rejected side alone, here
        dropped[role] = skipped[role] + len(c) - len(both)
    return pairs, dropped


def collate_pairs(pairs: Pairs, indices: list[int], *, pad_id: int, pad_to: int | None = None) -> Any:
    """One padded batch of the chosen answers of the pairs ``indices``, then their rejected answers (rows ``k`` and
    ``len(indices) + k`` are pair ``indices[k]``); ``pad_to``: every row that wide (``padding: max_length``)."""
    n = len(pairs)
    both = Examples(
        pairs.chosen.ids + pairs.rejected.ids, pairs.chosen.trainable + pairs.rejected.trainable,
        pairs.chosen.lines + pairs.rejected.lines,
    )  # fmt: skip
    rows = [(i,) for i in indices] + [(n + i,) for i in indices]
    return collate(rows, both, pad_id=pad_id, packed=False, pad_to=pad_to)  # loss_rows: the answers' positions


def answer_logps(model: Any, batch: Any, device: Any, token_loss: TokenLoss) -> tuple[Any, Any]:
    """Each row's answer log-probability (the sum over its trained tokens, in fp32) and its number of trained
    tokens, from one forward pass of ``model`` over the padded ``batch`` (its copies to ``device`` queued), without
    logits where ``token_loss`` (the model's) is chunked."""
    inputs, labels, rows = to_device(batch, device)
    return token_loss.row_log_probs(model, inputs, labels, rows), (labels[:, 1:] != IGNORE).sum(dim=1)


def preference_loss(
    policy: tuple[Any, Any], reference: tuple[Any, Any], tokens: tuple[Any, Any], *, beta: float, loss_type: str
) -> tuple[Any, Any, Any]:
    """Per-pair losses and the chosen and rejected rewards, from the (chosen, rejected) answer log-probabilities of
    the ``policy`` and the ``reference`` and their (chosen, rejected) trained ``tokens`` (IPO's normalization)."""
    import torch.nn.functional as F

    chosen_ratio = policy[0] - reference[0]
    rejected_ratio = policy[1] - reference[1]
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif loss_type == "ipo":
        delta = chosen_ratio / tokens[0].clamp(min=1) - rejected_ratio / tokens[1].clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


@dataclass
class PairBatch:
    """One micro-batch of preference pairs, collated: ``batch`` holds the chosen answers of the pairs ``pairs`` (their
    indices), then their rejected answers (``collate_pairs``); ``reference``: their reference log-probabilities,
    (pairs, 2) in fp32, looked up by those indices."""

    pairs: list[int]
    batch: Batch
    reference: Any

    def pin(self) -> None:
        """Its tensors in page-locked memory, so their copies to a GPU are queued without the host waiting."""
        self.batch.pin()
        self.reference = self.reference.pin_memory()


def pair_batch(
    pairs: Pairs, indices: list[int], reference: np.ndarray, *, pad_id: int, pad_to: int | None = None
) -> PairBatch:
    """The micro-batch of the pairs ``indices`` with their reference log-probabilities (``reference``: every pair's,
    (pairs, 2))."""
    import torch

    looked_up = torch.as_tensor(reference[indices], dtype=torch.float32)
    return PairBatch(list(indices), collate_pairs(pairs, indices, pad_id=pad_id, pad_to=pad_to), looked_up)


def preference_step(
    engine: Any, micro_batches: list[PairBatch], dist: Dist, *, token_loss: TokenLoss, beta: float, loss_type: str
) -> StepLoss:
    """Forward and backward of ``micro_batches`` (this rank's), then ``engine.step()``, queued without waiting for
    the device (on several processes the step's pair and token counts are summed across them first). Every pair of
    the global step weighs the same, whatever its micro-batch or rank: the summed loss is scaled by the step's pair
    count (DeepSpeed averages gradients over ranks, hence * world)."""
    import torch

    total_pairs, real_tokens = dist.sum(
        sum(len(m.pairs) for m in micro_batches), sum(m.batch.real_tokens for m in micro_batches)
    )
    scale = dist.world / max(total_pairs, 1)
    total = torch.zeros((), dtype=torch.float32, device=dist.device)
    for micro in micro_batches:
        logps, tokens = answer_logps(engine, micro.batch, dist.device, token_loss)
        ref = micro.reference.to(dist.device, non_blocking=True)
        k = len(micro.pairs)
        losses, _, _ = preference_loss(
            (logps[:k], logps[k:]), (ref[:, 0], ref[:, 1]), (tokens[:k], tokens[k:]), beta=beta, loss_type=loss_type
        )
        engine.backward(losses.sum() * scale, scale_wrt_gas=False)
        total += losses.detach().sum()
    engine.step()
    return StepLoss(total, int(total_pairs), int(real_tokens))


def pair_metrics(
    engine: Any,
    pairs: Pairs,
    reference: np.ndarray,
    *,
    token_loss: TokenLoss,
    beta: float,
    loss_type: str,
    pad_id: int,
    batch_size: int,
    dist: Dist,
) -> dict[str, float]:
    """An evaluation over ``pairs`` (every rank its share, ``batch_size`` pairs per forward): the mean preference
    loss as ``eval_loss``, and ``PREFERENCE_SCALARS``: the share of pairs whose chosen reward is above the rejected
    one, their mean margin, the mean rewards and the mean answer log-probabilities. ``reference``: (pairs, 2)."""
    import torch

    n = len(pairs)
    sums = np.zeros(7)  # loss, accuracy, margin, chosen reward, rejected reward, chosen logp, rejected logp
    was_training = engine.training
    engine.eval()
    with torch.no_grad():
        for chunk in group(list(range(n)), batch_size * dist.world):
            mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
            logps, tokens = answer_logps(engine, collate_pairs(pairs, mine, pad_id=pad_id), dist.device, token_loss)
            if not chunk[dist.rank :: dist.world]:
                continue  # the stand-in's pairs are not counted
            k = len(mine)
            ref = torch.as_tensor(reference[mine], dtype=torch.float32, device=logps.device)
            losses, chosen, rejected = preference_loss(
                (logps[:k], logps[k:]), (ref[:, 0], ref[:, 1]), (tokens[:k], tokens[k:]), beta=beta,
                loss_type=loss_type,
            )  # fmt: skip
            values = (losses, (chosen > rejected).float(), chosen - rejected, chosen, rejected, logps[:k], logps[k:])
            sums += np.asarray([float(v.double().sum()) for v in values])
    engine.train(was_training)
    totals = dist.sum(*sums)
    means = [t / max(n, 1) for t in totals]
    return {"eval_loss": means[0], **dict(zip(PREFERENCE_SCALARS, means[1:]))}
