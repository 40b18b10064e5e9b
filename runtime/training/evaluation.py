"""Evaluation during training, every rank taking its share: the mean token loss over validation examples, and the
share of validation conversations whose generated answer matches the reference. Each shows its progress on rank 0
once it runs for more than a few seconds (``CountProgress``): generating answers on a CPU can take minutes."""

from __future__ import annotations

from typing import Any

from .batches import collate, group, to_device
from .distributed import Dist
from .progress import CountProgress

__all__ = ["exact_match_share", "mean_token_loss"]


def mean_token_loss(engine: Any, token_loss: Any, examples: Any, *, pad_id: int, batch_size: int, dist: Dist) -> float:
    """The mean loss per trained token over ``examples`` (tokenized ``Examples``), ``batch_size`` per rank."""
    import torch

    batches = group([(i,) for i in range(len(examples))], batch_size * dist.world)
    loss_sum, count = 0.0, 0
    engine.eval()
    with torch.no_grad(), CountProgress(len(batches), "evaluation (eval loss)", "batch", enabled=dist.main) as shown:
        for chunk in batches:
            mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
            weight = 1.0 if chunk[dist.rank :: dist.world] else 0.0
            batch = collate(mine, examples, pad_id=pad_id, packed=False)
            loss = token_loss(engine, *to_device(batch, dist.device))
            loss_sum += weight * loss.item()
            count += int(weight) * batch.loss_tokens
            shown.update()
    engine.train()
    total, tokens = dist.sum(loss_sum, count)
    return total / max(tokens, 1)


def exact_match_share(
    engine: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    *,
    generation: Any,
    max_new_tokens: int,
    dist: Dist,
    lockstep: bool,
) -> float:
    """The share of ``conversations`` whose generated answer equals the reference (the last assistant turn), every
    rank answering its share, with the spec's ``generation`` config (prompt format, stopping sequences).
    ``lockstep`` (ZeRO-3 on several ranks): each rank answers as many examples, each for max_new_tokens steps, so
    that every rank joins every forward pass."""
    from .chat_template import stop_texts
    from .generation import Sampling, answer, stop_token_ids

    fmt = generation.prompt_format
    stops = stop_texts(fmt, generation.stopping_sequences)
    stop_ids = stop_token_ids(tokenizer, stops)
    sampling = Sampling(max_new_tokens=max_new_tokens)
    mine = list(range(dist.rank, len(conversations), dist.world))
    share = -(-len(conversations) // dist.world) if lockstep else len(mine)
    matched = 0
    label = "evaluation (exact match" + (f", rank 0's share of {len(conversations)})" if dist.world > 1 else ")")
    engine.eval()
    with CountProgress(share, label, "answer", enabled=dist.main) as shown:
        for k in range(share):
            index = mine[k] if k < len(mine) else 0  # lockstep: a rank with fewer examples repeats one, uncounted
            result = answer(
                engine.module, tokenizer, conversations[index], fmt=fmt, stop_texts=stops, stop_ids=stop_ids,
                sampling=sampling, lockstep=lockstep,
            )  # fmt: skip
            matched += int(k < len(mine) and result.exact_match)
            shown.update()
    engine.train()
    (total,) = dist.sum(matched)
    return total / max(len(conversations), 1)
