"""The training loss: summed next-token cross-entropy over the labelled (assistant) tokens of a batch.

The usual way (the model returns logits for every position, then cross-entropy) holds a tokens x vocabulary
tensor, twice (the logits and their gradient), in fp32 for the loss: for a 128k vocabulary and 8k tokens that is
8 GiB, more than the rest of a 1B model's activations. Here the model stops before its output layer, and
``linear_cross_entropy`` computes logits, loss and both gradients chunk by chunk, for labelled tokens only (the
prompt's tokens are never projected at all). Nothing tokens x vocabulary outlives one chunk of 256 MiB; the
output layer's weight gradient is accumulated in place, in the weight's dtype.

Preference tuning needs each row's summed log-probability of its labelled tokens (an answer's), not one sum:
``linear_log_probs`` computes them the same way, chunk by chunk. The loss built on them is not a sum of them, so
their gradients wait for backward (which knows each row's weight) and the chunks' logits are computed again there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .batches import IGNORE

__all__ = ["CHUNK_ELEMENTS", "TokenLoss", "linear_cross_entropy", "linear_log_probs"]

#: elements of one chunk's fp32 logits (and, reused in place, their gradient): 256 MiB
CHUNK_ELEMENTS = 1 << 26
#: model types whose logits are exactly ``lm_head(final hidden state)`` (no soft-capping or scaling after it)
_PLAIN_OUTPUT_LAYER = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class _LinearCrossEntropy(torch.autograd.Function):
    """sum(CE(hidden @ weight.T, labels)) over rows whose label is not IGNORE. The gradients are computed in the
    forward pass, chunk by chunk, and kept (hidden-sized and weight-sized); backward only scales them."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: Any, want_grad: bool
    ) -> torch.Tensor:
        if rows is None:
            rows = (labels != IGNORE).nonzero().squeeze(1)  # waits for the device: batches bring their rows
        h, y = hidden.index_select(0, rows), labels.index_select(0, rows)
        grad_h = torch.empty_like(h) if want_grad and ctx.needs_input_grad[0] else None
        # accumulated in place, in the weight's dtype (the gradient DeepSpeed receives has that dtype anyway): no
        # vocabulary x width temporary per chunk
        grad_w = torch.zeros_like(weight) if want_grad and ctx.needs_input_grad[1] else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        for start in range(0, h.shape[0], chunk):
            h_c, y_c = h[start : start + chunk], y[start : start + chunk]
            logits = (h_c @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, y_c[:, None]).squeeze(1)).sum()
            if grad_h is None and grad_w is None:
                continue
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g[torch.arange(len(y_c), device=g.device), y_c] -= 1.0
            g = g.to(weight.dtype)
            if grad_h is not None:
                torch.mm(g, weight, out=grad_h[start : start + chunk])
            if grad_w is not None:
                grad_w.addmm_(g.T, h_c)
        if grad_h is not None:
            ctx.save_for_backward(rows, grad_h)
            ctx.hidden_shape = hidden.shape
        ctx.grad_w = grad_w
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden = grad_weight = None
        if ctx.saved_tensors:
            rows, grad_h = ctx.saved_tensors
            grad_hidden = torch.zeros(ctx.hidden_shape, dtype=grad_h.dtype, device=grad_h.device)
            grad_hidden.index_copy_(0, rows, (grad_h.float() * grad_loss).to(grad_h.dtype))
        if ctx.grad_w is not None:
            grad_weight, ctx.grad_w = ctx.grad_w.mul_(grad_loss), None  # once: the buffer becomes the gradient
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden (N, d) @ weight (V, d).T`` against ``labels (N,)`` (IGNORE: skipped), fp32,
    without materializing the (N, V) logits. ``rows``: the positions whose label is not IGNORE, where the caller
    knows them (else found here, which waits for the device)."""
    return _LinearCrossEntropy.apply(hidden, weight, labels, rows, torch.is_grad_enabled())


class _LinearLogProbs(torch.autograd.Function):
    """Each row's sum of log_softmax(hidden @ weight.T)[label] over its positions ``rows`` (``owners``: the row of
    each). Forward keeps the selected hidden states and each position's log-sum-exp; backward, which knows each
    row's gradient, computes the chunks' logits again for the gradients."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: Any, owners: Any, n: int
    ) -> torch.Tensor:
        h, y = hidden.index_select(0, rows), labels.index_select(0, rows)
        sums = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(len(rows), dtype=torch.float32, device=hidden.device)
        for start, stop in _chunks(len(rows), weight):
            logits = (h[start:stop] @ weight.T).float()
            lse[start:stop] = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, y[start:stop, None]).squeeze(1) - lse[start:stop]
            sums.index_add_(0, owners[start:stop], picked)
        if any(ctx.needs_input_grad[:2]):
            ctx.save_for_backward(h, y, rows, owners, lse, weight)
            ctx.hidden_shape = hidden.shape
        return sums

    @staticmethod
    def backward(ctx: Any, grad_sums: torch.Tensor) -> tuple[Any, ...]:
        h, y, rows, owners, lse, weight = ctx.saved_tensors
        scale = grad_sums.float().index_select(0, owners)  # d loss / d (each position's log-probability)
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start, stop in _chunks(len(rows), weight):
            h_c = h[start:stop]
            g = (h_c @ weight.T).float().sub_(lse[start:stop, None]).exp_()  # softmax
            g[torch.arange(stop - start, device=g.device), y[start:stop]] -= 1.0
            g = g.mul_(-scale[start:stop, None]).to(weight.dtype)  # d log p / d logits = onehot - softmax
            if grad_h is not None:
                torch.mm(g, weight, out=grad_h[start:stop])
            if grad_w is not None:
                grad_w.addmm_(g.T, h_c)
        grad_hidden = None
        if grad_h is not None:
            grad_hidden = torch.zeros(ctx.hidden_shape, dtype=h.dtype, device=h.device).index_copy_(0, rows, grad_h)
        return grad_hidden, grad_w, None, None, None, None


def _chunks(count: int, weight: torch.Tensor) -> list[tuple[int, int]]:
    size = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def linear_log_probs(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Each row's summed log-probability of its labelled tokens, (B,) in fp32: ``hidden (B, T, d) @ weight (V, d).T``
    against ``labels (B, T)`` (IGNORE: skipped), without materializing the (B, T, V) logits. ``rows``: the positions
    in ``labels.reshape(-1)`` whose label is not IGNORE, where the caller knows them (else found here, which waits
    for the device)."""
    n, width = labels.shape
    labels = labels.reshape(-1)
    if rows is None:
        rows = (labels != IGNORE).nonzero().squeeze(1)  # waits for the device: batches bring their rows
    owners = torch.div(rows, max(width, 1), rounding_mode="floor")
    return _LinearLogProbs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, labels, rows, owners, n)


class TokenLoss:
    """``loss = TokenLoss(engine.module, zero_stage)(engine, inputs, labels)``: summed next-token cross-entropy of
    a batch, chunked where the model allows it (``self.chunked``), else from the model's full logits;
    ``row_log_probs``: each row's summed log-probability of its labelled tokens, the same way."""

    def __init__(self, module: Any, *, zero_stage: int) -> None:
        self.model = module.get_base_model() if hasattr(module, "get_base_model") else module  # under a peft wrapper
        head = self.model._modules.get("lm_head")
        self.chunked, self.reason = True, "chunked (logits never materialized)"
        if zero_stage == 3:  # the output layer's weight is only gathered inside its own forward
            self.chunked, self.reason = False, "full logits (ZeRO stage 3)"
        elif getattr(self.model.config, "model_type", None) not in _PLAIN_OUTPUT_LAYER:
            self.chunked, self.reason = False, f"full logits (model type {self.model.config.model_type!r})"
        elif type(head) is not torch.nn.Linear or head.bias is not None:
            self.chunked, self.reason = False, "full logits (the output layer is adapted or has a bias)"

    def __call__(
        self, engine: Any, inputs: dict[str, Any], labels: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``rows``: the batch's ``loss_rows`` (on the labels' device), which spare the loss a wait for the device."""
        shifted = labels[:, 1:].reshape(-1)
        if not self.chunked:
            logits = engine(**inputs, use_cache=False).logits[:, :-1, :].float()
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted, ignore_index=IGNORE, reduction="sum")
        weight = self.model._modules["lm_head"].weight
        return self._through_output_layer(
            engine, inputs, lambda hidden: linear_cross_entropy(hidden.flatten(0, 1), weight, shifted, rows)
        )

    def row_log_probs(
        self, engine: Any, inputs: dict[str, Any], labels: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each row's summed next-token log-probability of its labelled tokens, (rows,) in fp32 (preference tuning's
        answer log-probabilities), chunked where ``self.chunked``. ``rows``: as for the loss."""
        shifted = labels[:, 1:]
        if not self.chunked:
            logits = engine(**inputs, use_cache=False).logits[:, :-1, :].float()
            per_token = -F.cross_entropy(logits.transpose(1, 2), shifted.clamp(min=0), reduction="none")
            return (per_token * (shifted != IGNORE)).sum(dim=1)
        weight = self.model._modules["lm_head"].weight
        return self._through_output_layer(
            engine, inputs, lambda hidden: linear_log_probs(hidden, weight, shifted, rows)
        )

    def _through_output_layer(
        self, engine: Any, inputs: dict[str, Any], compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``compute(hidden states of every position but the last)`` as the engine's forward output."""
        head = self.model._modules["lm_head"]
        # The output layer is swapped for one that returns the loss (or the rows' log-probabilities), so it is what
        # the engine's forward returns: DeepSpeed hooks its backward set-up on that output, which must run before any
        # gradient arrives (the output layer's own gradient is computed with the loss).
        self.model._modules["lm_head"] = _LossHead(compute)
        try:
            return engine(**inputs, use_cache=False).logits
        finally:
            self.model._modules["lm_head"] = head


class _LossHead(torch.nn.Module):
    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.compute = compute  # a closure over the output layer's weight: not registered as this module's parameter

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.compute(hidden[:, :-1, :])
