"""The engine a recipe trains with: the precision it trains in, and DeepSpeed over the model with the optimizer and
learning-rate schedule of the spec (one code path for every topology: gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_engine", "training_dtype", "training_precision"]


def training_precision(asked: str, *, cuda: bool) -> str:
    """The precision a run trains in: the spec's, or for ``auto`` bf16 on GPUs and fp32 on CPUs."""
    return asked if asked != "auto" else ("bf16" if cuda else "fp32")


def training_dtype(precision: str) -> Any:
    """The torch dtype weights are loaded in for ``precision``: DeepSpeed casts the module to it anyway, and keeps its
    fp32 master weights (for the trainable parameters only) in the optimizer."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def build_engine(
    model: Any, spec: Any, deepspeed_config: dict[str, Any], *, precision: str, total_steps: int, fused: bool
) -> Any:
    """``deepspeed.initialize`` over ``model`` with torch's AdamW on its trainable parameters (``fused``: one kernel
    updates them all, on GPUs), the spec's learning-rate schedule over ``total_steps``, and the plan's DeepSpeed
    config in ``precision``. DeepSpeed's own optimizers are not used: they compile C++ on first use."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=fused)
    scheduler = get_scheduler(
        spec.lr_scheduler_type, optimizer, num_warmup_steps=spec.num_warmup_steps, num_training_steps=total_steps
    )
    config = {**deepspeed_config, "bf16": {"enabled": precision == "bf16"}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine
