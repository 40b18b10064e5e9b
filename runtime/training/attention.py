"""``sdpa_varlen``: causal SDPA called once per packed sample, registered with transformers as an attention kernel.

transformers' SDPA path gives a packed row a block-diagonal mask of row x row entries, which turns off SDPA's fused
causal kernels and costs as much as attending over the whole row. Here each sample (a run of position ids starting
at 0) attends to itself with ``is_causal=True`` and no mask: the work grows with each sample's length squared, not
the row's. A row of one sample (the padded layout, or evaluation) is one call. ftc pads rows on the right only, so
real tokens never see padding under a causal mask, and padded positions carry no loss. Layers with a sliding
window (Mistral, some Qwen layers) give a sample longer than the window the window's mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NAME", "register"]

NAME = "sdpa_varlen"


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
    window = kwargs.get("sliding_window")

    def attend(b: int, s: int, e: int) -> torch.Tensor:
        q, k, v = query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e]
        if window is None or e - s <= window:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
        i = torch.arange(e - s, device=q.device)  # a sample longer than the layer's sliding window
        distance = i[:, None] - i[None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=(distance >= 0) & (distance < window), **options)

    rows = []
    for b, starts in enumerate(_sample_starts(kwargs.get("position_ids"), batch, length)):
        bounds = starts + [length]
        pieces = [attend(b, s, e) for s, e in zip(bounds[:-1], bounds[1:])]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None  # the samples' bounds come from the position ids, inside the attention call


def register() -> str:
    """Make ``attn_implementation="sdpa_varlen"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, sdpa_varlen)
    AttentionMaskInterface.register(NAME, _no_mask)
    return NAME
