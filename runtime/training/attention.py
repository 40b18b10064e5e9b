"""``sdpa_varlen``: causal attention within each packed sample, registered with transformers as an attention kernel.

transformers' SDPA path gives a packed row a block-diagonal mask of row x row entries, which turns off SDPA's fused
causal kernels and costs as much as attending over the whole row. Here each sample attends only to itself, at the
cost of its own length squared, and nothing waits for the device to find the samples: the batch carries their bounds,
computed once on the host when it was collated (``runtime/training/batches.py``, the flat layout: ``sample_bounds``
and ``cu_seq_lens_q``). On a GPU in bf16/fp16 the whole row is one call of PyTorch's varlen flash-attention kernel
(``torch.nn.attention.varlen``, GQA native); elsewhere (CPUs, fp32, soft-capping, a sample longer than a sliding
window) causal SDPA is called once per sample, without a mask. A batch without bounds (padded rows, evaluation) has
its samples found from the position ids. ftc pads rows on the right only, so real tokens never see padding under a
causal mask, and padded positions carry no loss. Layers with a sliding window (Mistral, some Qwen layers) give a
sample longer than the window the window's mask.

Gemma 2 soft-caps its attention scores (``softcap * tanh(scores / softcap)``), which SDPA cannot do: its samples are
attended with the scores computed here (as transformers' eager attention does), under a second name without "sdpa"
in it (transformers refuses any SDPA-named kernel for a model that soft-caps).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NAME", "SOFTCAP_NAME", "VARLEN", "register", "sdpa_varlen", "varlen_kernel"]

NAME = "sdpa_varlen"
#: the same kernel, for models that soft-cap attention scores (Gemma 2)
SOFTCAP_NAME = "varlen_softcap"
#: the names a model loaded with these kernels has: its packed batches are flat (batches.py)
VARLEN = frozenset({NAME, SOFTCAP_NAME})


def _sample_starts(kwargs: dict[str, Any], batch: int, length: int) -> list[list[int]]:
    bounds = kwargs.get("sample_bounds")
    if bounds is not None and batch == 1:  # the flat layout's, computed when the batch was collated
        return [list(bounds.offsets[:-1])]
    position_ids = kwargs.get("position_ids")
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
    fused = _fused_varlen(module, query, key, value, dropout, scaling, kwargs)
    if fused is not None:
        return fused, None
    options: dict[str, Any] = {"dropout_p": dropout if module.training else 0.0, "scale": scaling}
    if key.shape[1] != heads:
        options["enable_gqa"] = True
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[2]
        if softcap is None and (window is None or n <= window):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
        else:  # a sample longer than the layer's sliding window, or soft-capped
            i = torch.arange(n, device=q.device)
            distance = i[:, None] - i[None, :]
            allowed = (distance >= 0) & (distance < window) if window is not None else distance >= 0
            if softcap is None:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **options)
            else:
                out = _soft_capped(q, k, v, allowed, softcap, options["scale"], options["dropout_p"])
        return out.transpose(1, 2)  # (rows, n, H, D)

    positions = kwargs.get("position_ids")
    if batch > 1 and "sample_bounds" not in kwargs and (positions is None or positions.shape[0] == 1):
        # padded rows of one example each (evaluation, preference pairs): transformers' own position ids are one
        # range for every row, so each row is one sample, and one causal call attends them all (right padding)
        return attend(query, key, value).contiguous(), None
    # split, not sliced: the backward of a split is one concatenation, where each slice's would write a zeroed
    # tensor of the whole row (a row's worth of memory traffic per sample and per q, k and v)
    rows = []
    split = (lambda t: t.split(1, dim=0)) if batch > 1 else (lambda t: (t,))  # noqa: E731
    starts_of = _sample_starts(kwargs, batch, length)
    for starts, q, k, v in zip(starts_of, split(query), split(key), split(value)):
        sizes = [e - s for s, e in zip(starts, starts[1:] + [length])]
        parts = zip(q.split(sizes, dim=2), k.split(sizes, dim=2), v.split(sizes, dim=2))
        pieces = [attend(*part) for part in parts]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1))
    out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.contiguous(), None


def varlen_kernel() -> Any:
    """PyTorch's varlen flash-attention function (CUDA, bf16/fp16), or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _fused_varlen(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout: float, scaling: Any, kwargs: Any
) -> torch.Tensor | None:
    """The flat row attended in one call of the varlen kernel, or None where it does not apply (no kernel, not a
    GPU, fp32, a row without bounds, dropout, soft-capping, a sample longer than the sliding window)."""
    cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or longest is None or query.shape[0] != 1 or not _on_gpu(query):
        return None
    if query.dtype not in (torch.bfloat16, torch.float16) or kwargs.get("softcap") is not None:
        return None
    window = kwargs.get("sliding_window")
    if (dropout and module.training) or (window is not None and longest > window):
        return None
    kernel = varlen_kernel()
    if kernel is None:
        return None
    accepted = _parameters(kernel)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, heads, D)
    options: dict[str, Any] = {}
    if scaling is not None and "scale" in accepted:
        options["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-9 * scaling:
        return None  # a torch whose kernel takes no scale, which is then its default: 1 / sqrt(head dim)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in accepted:
            options["enable_gqa"] = True
        else:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    if "window_size" in accepted:
        options["window_size"] = (-1, 0)  # causal (the default, (-1, -1), attends both ways)
    elif "is_causal" in accepted:
        options["is_causal"] = True
    else:
        return None
    cu = cu.to(device=query.device, dtype=torch.int32)
    out = kernel(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, longest, longest, **options)
    return out[None]  # (1, T, H, D)


def _on_gpu(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda  # PyTorch's varlen kernel is CUDA's


@functools.cache
def _parameters(function: Any) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(function).parameters)


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


def register() -> str:
    """Make ``attn_implementation="sdpa_varlen"`` (and ``SOFTCAP_NAME``) known to transformers (idempotent). No mask
    function is registered: transformers then builds no mask, and does not scan the position ids for packed samples
    (a wait for the device in every forward); the samples' bounds come with the batch. A compiled layer does not
    compile it."""
    from transformers import AttentionInterface

    for name in (NAME, SOFTCAP_NAME):
        AttentionInterface.register(name, _uncompiled)
    return NAME


#: what transformers calls: never traced into a compiled layer (runtime/training/compiled.py), whose graph breaks
#: around it (the kernel reads the batch's host-side bounds and chooses its own kernels)
_uncompiled = torch.compiler.disable(sdpa_varlen)
