"""``sdpa_varlen``: causal SDPA called once per packed sample, registered with transformers as an attention kernel.

transformers' SDPA path gives a packed row a block-diagonal mask of row x row entries, which turns off SDPA's fused
causal kernels and costs as much as attending over the whole row. Here each sample (a run of position ids starting
at 0) attends to itself with ``is_causal=True`` and no mask: the work grows with each sample's length squared, not
the row's. A row of one sample (the padded layout, or evaluation) is one call. ftc pads rows on the right only, so
real tokens never see padding under a causal mask, and padded positions carry no loss. Layers with a sliding
window (Mistral, some Qwen layers) give a sample longer than the window the window's mask.

Gemma 2 soft-caps its attention scores (``softcap * tanh(scores / softcap)``), which SDPA cannot do: its samples are
attended with the scores computed here (as transformers' eager attention does), under a second name without "sdpa"
in it (transformers refuses any SDPA-named kernel for a model that soft-caps).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NAME", "SOFTCAP_NAME", "register"]

NAME = "sdpa_varlen"
#: the same kernel, for models that soft-cap attention scores (Gemma 2)
SOFTCAP_NAME = "varlen_softcap"


def _sample_starts(position_ids: torch.Tensor | None, batch: int, length: int) -> list[list[int]]:
    if position_ids is None:
        return [[0]] * batch
    rows, cols = (position_ids.expand(batch, -1) == 0).nonzero(as_tuple=True)
    starts: list[list[int]] = [[] for _ in range(batch)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        starts[r].append(c)
    return [s if s and s[0] == 0 else [0] + s for s in starts]


def sdpa_varlen(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query (B, H, T, D), key/value (B, Hkv, T, D) -> (B, T, H, D), as transformers' attention functions return."""
    batch, heads, length, _ = query.shape
    options: dict[str, Any] = {"dropout_p": dropout if module.training else 0.0, "scale": scaling}
    if key.shape[1] != heads:
        options["enable_gqa"] = True
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")

    def attend(b: int, s: int, e: int) -> torch.Tensor:
        q, k, v = query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e]
        if softcap is None and (window is None or e - s <= window):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
        i = torch.arange(e - s, device=q.device)  # a sample longer than the layer's sliding window, or soft-capped
        distance = i[:, None] - i[None, :]
        allowed = (distance >= 0) & (distance < window) if window is not None else distance >= 0
        if softcap is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **options)
        return _soft_capped(q, k, v, allowed, softcap, options["scale"], options["dropout_p"])

    rows = []
    for b, starts in enumerate(_sample_starts(kwargs.get("position_ids"), batch, length)):
        bounds = starts + [length]
        pieces = [attend(b, s, e) for s, e in zip(bounds[:-1], bounds[1:])]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _soft_capped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, softcap: float, scale: Any, p: float
) -> torch.Tensor:
    """Attention with soft-capped scores, computed as transformers' eager attention for Gemma 2 computes it."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(2, 3)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return F.dropout(weights, p=p) @ v


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None  # the samples' bounds come from the position ids, inside the attention call


def register() -> str:
    """Make ``attn_implementation="sdpa_varlen"`` (and ``SOFTCAP_NAME``) known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for name in (NAME, SOFTCAP_NAME):
        AttentionInterface.register(name, sdpa_varlen)
        AttentionMaskInterface.register(name, _no_mask)
    return NAME
