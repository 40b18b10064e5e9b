"""Attention over packed rows, each way ftc could compute it: used by bench/gpu_profile.py (its attention stage).

Rows of the shape's context length are filled with samples of lognormal lengths (median ~230 tokens, as chat data),
with the shape's query and key/value heads (GQA). Each kernel runs forward + backward; reported: the median ms over
``iters`` iterations after ``warmup`` (the device synchronized around each), and the largest absolute difference of
its output and of the query's gradient from the reference, per-sample causal SDPA in fp32.

- ``dense_mask_sdpa``: what transformers builds for a packed row: a row x row boolean mask (causal within each
  sample), keys and values repeated for GQA;
- ``sdpa_varlen``: ftc's kernel (ftc.runtime.training.attention), given the samples' bounds as the model gives them;
- ``per_sample_sdpa``: causal SDPA once per sample in a Python loop, in the training dtype;
- ``flex_compiled``: FlexAttention with a block mask built once, compiled with static shapes (GPU only);
- ``torch_varlen_attn`` and ``flash_attn_varlen`` (GPU only, where importable): the flat varlen kernels.
"""

from __future__ import annotations

import inspect
import statistics
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["attention_benchmark", "packed_lengths"]

REQUIRED = ("dense_mask_sdpa", "sdpa_varlen", "per_sample_sdpa")


def packed_lengths(rows: int, context: int, seed: int = 0) -> list[list[int]]:
    """Sample lengths filling ``rows`` rows of ``context`` tokens (the last sample of a row cut to fit)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        row, left = [], context
        while left > 0:
            n = min(left, int(np.clip(rng.lognormal(np.log(230), 0.6), 16, context)))
            row.append(n)
            left -= n
        out.append(row)
    return out


def _per_sample(q, k, v, lengths: list[list[int]]):
    """(B, T, H, D): causal SDPA on each sample alone."""
    import torch
    import torch.nn.functional as F

    rows = []
    for b, row in enumerate(lengths):
        pieces, s = [], 0
        for n in row:
            pieces.append(
                F.scaled_dot_product_attention(
                    q[b : b + 1, :, s : s + n], k[b : b + 1, :, s : s + n], v[b : b + 1, :, s : s + n],
                    is_causal=True, enable_gqa=True,
                )
            )  # fmt: skip
            s += n
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows).transpose(1, 2)


def _kernels(q, k, v, lengths, cuda: bool, extras: dict) -> dict[str, Callable[[], Any] | str]:
    """name -> a function computing (B, T, H, D) from q, k, v; or the reason it cannot run here. ``extras``: what
    building them measured (the block mask's time)."""
    import torch
    import torch.nn.functional as F

    batch, heads, length, _ = q.shape
    group = heads // k.shape[1]
    sample = torch.tensor([i for row in lengths for i, n in enumerate(row) for _ in range(n)], device=q.device)
    sample = sample.view(batch, length)  # the index of each token's sample in its row
    position = torch.cat([torch.arange(n, device=q.device) for row in lengths for n in row]).view(batch, length)
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    mask = (sample[:, :, None] == sample[:, None, :]) & causal  # (B, T, T), as transformers builds it once a batch
    flat = [n for row in lengths for n in row]
    cu = torch.tensor([0, *np.cumsum(flat)], dtype=torch.int32, device=q.device)
    longest = max(flat)
    kernels: dict[str, Callable[[], Any] | str] = {
        "dense_mask_sdpa": lambda: F.scaled_dot_product_attention(
            q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1), attn_mask=mask[:, None]
        ).transpose(1, 2),
        "per_sample_sdpa": lambda: _per_sample(q, k, v, lengths),
    }
    kernels["sdpa_varlen"] = _ftc_varlen(q, k, v, position, cu, longest, extras)
    if not cuda:
        reason = "GPU only: PyTorch has no FlexAttention backward on a CPU"
        kernels["flex_compiled"] = reason
        kernels["torch_varlen_attn"] = kernels["flash_attn_varlen"] = "GPU only (flash kernels)"
        return kernels
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def same_sample_causal(b, h, qi, ki):
        return (sample[b, qi] == sample[b, ki]) & (qi >= ki)

    started = time.perf_counter()
    block_mask = create_block_mask(same_sample_causal, batch, None, length, length, device=q.device)
    extras["flex_block_mask_ms"] = 1e3 * (time.perf_counter() - started)
    flex = torch.compile(flex_attention, dynamic=False)
    kernels["flex_compiled"] = lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=True).transpose(1, 2)
    kernels["torch_varlen_attn"] = _torch_varlen(q, k, v, cu, longest)
    kernels["flash_attn_varlen"] = _flash_varlen(q, k, v, cu, longest)
    return kernels


def _ftc_varlen(q, k, v, position, cu, longest, extras: dict):
    """ftc's sdpa_varlen as ftc's packed batches give it the rows: one flat row of every row's samples (its fused
    varlen path takes one row), the samples' bounds (``cu_seq_lens_q``, ``max_length_q``) given where it takes them
    (named, or any keyword): ``extras`` records which it was given. The rows are laid out flat inside the timed call
    (a copy of q, k and v: small beside attention)."""
    from ftc.runtime.training.attention import sdpa_varlen

    params = inspect.signature(sdpa_varlen).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    bounds = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
    extra = {name: value for name, value in bounds.items() if name in params or open_ended}
    extras["sdpa_varlen_given"] = sorted(extra)
    module = types.SimpleNamespace(training=True)
    batch, heads, length, dim = q.shape

    def flat(t):  # (B, h, T, D) -> (1, h, B*T, D)
        return t.transpose(0, 1).reshape(1, t.shape[1], batch * length, dim)

    def run():
        out, _ = sdpa_varlen(
            module, flat(q), flat(k), flat(v), None, scaling=None, position_ids=position.reshape(1, -1), **extra
        )
        return out.view(batch, length, heads, dim)

    return run


def _torch_varlen(q, k, v, cu, longest):
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as exc:
        return f"not in this torch: {exc}"
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    gqa = "enable_gqa" in params

    def flat(t, expand):
        t = t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) if expand else t
        return t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[-1])

    def run():
        out = varlen_attn(
            flat(q, False), flat(k, not gqa), flat(v, not gqa), cu, cu, longest, longest,
            **causal, **({"enable_gqa": True} if gqa else {}),
        )  # fmt: skip
        return out.view(q.shape[0], q.shape[2], q.shape[1], q.shape[3])

    return run


def _flash_varlen(q, k, v, cu, longest):
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception as exc:  # not installed, or built for another torch
        return f"flash_attn not importable: {type(exc).__name__}: {exc}"[:300]

    def flat(t):
        return t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[-1])

    def run():
        out = flash_attn_varlen_func(flat(q), flat(k), flat(v), cu, cu, longest, longest, causal=True)
        return out.view(q.shape[0], q.shape[2], q.shape[1], q.shape[3])

    return run


def attention_benchmark(
    *, rows: int, context: int, heads: int, kv_heads: int, head_dim: int, iters: int, warmup: int
) -> dict:
    """Each kernel's median forward+backward ms and its differences from per-sample fp32 SDPA."""
    import torch

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    lengths = packed_lengths(rows, context)
    generator = torch.Generator(device="cpu").manual_seed(0)
    base = [torch.randn(rows, h, context, head_dim, generator=generator) for h in (heads, kv_heads, kv_heads)]
    grad_out = torch.randn(rows, context, heads, head_dim, generator=generator)
    reference = [t.to(device).requires_grad_() for t in base]
    expected = _per_sample(*reference, lengths)
    (expected * grad_out.to(device)).sum().backward()
    expected, expected_grad = expected.detach(), reference[0].grad
    q, k, v = (t.to(device, dtype).requires_grad_() for t in base)
    g = grad_out.to(device, dtype)
    flat = [n for row in lengths for n in row]
    result: dict[str, Any] = {
        "device": device, "dtype": str(dtype).replace("torch.", ""), "rows": rows, "context": context,
        "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "samples": len(flat),
        "median_sample": float(np.median(flat)), "iters": iters, "warmup": warmup,
        "dense_over_per_sample_work": rows * context**2 / sum(n * n for n in flat),
        "kernels": {},
    }  # fmt: skip
    for name, kernel in _kernels(q, k, v, lengths, cuda, result).items():
        if isinstance(kernel, str):
            result["kernels"][name] = {"status": "skipped", "reason": kernel}
        else:
            try:
                result["kernels"][name] = _measure(kernel, (q, k, v), g, expected, expected_grad, iters, warmup, cuda)
            except Exception as exc:  # recorded; the other kernels still run
                result["kernels"][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:1000]}
    return result


def _measure(kernel, inputs, grad_out, expected, expected_grad, iters: int, warmup: int, cuda: bool) -> dict:
    import torch

    times = []
    for i in range(warmup + iters):
        for t in inputs:
            t.grad = None
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = kernel()
        (out * grad_out).sum().backward()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - started))
    return {
        "status": "ok",
        "ms": statistics.median(times),
        "max_abs_diff_out": float((out.detach().float() - expected).abs().max()),
        "max_abs_diff_grad_q": float((inputs[0].grad.float() - expected_grad).abs().max()),
    }
