"""The engine a recipe trains with: the precision it trains in, and DeepSpeed over the model with the optimizer and
learning-rate schedule of the spec (one code path for every topology: gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .state_file import checkpoint_engine

__all__ = [
    "OptimizerChoice",
    "build_engine",
    "choose_optimizer",
    "engine_config",
    "optimizer_path",
    "training_dtype",
    "training_precision",
]


def training_precision(asked: str, *, cuda: bool) -> str:
    """The precision a run trains in: the spec's, or for ``auto`` bf16 on GPUs and fp32 on CPUs."""
    return asked if asked != "auto" else ("bf16" if cuda else "fp32")


def training_dtype(precision: str) -> Any:
    """The torch dtype weights are loaded in for ``precision``: DeepSpeed casts the module to it anyway, and keeps its
    fp32 master weights (for the trainable parameters only) in the optimizer."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def build_engine(
    model: Any, spec: Any, deepspeed_config: dict[str, Any], *, precision: str, total_steps: int, world: int
) -> Any:
    """``deepspeed.initialize`` over ``model`` with torch's fused AdamW on its trainable parameters (one kernel
    updates them all, on GPUs and CPUs), the spec's learning-rate schedule over ``total_steps``, and the plan's
    DeepSpeed config in ``precision`` for ``world`` processes (``engine_config``). DeepSpeed's own optimizers are
    not used: they compile C++ on first use. A single process skips DeepSpeed's gradient all-reduce where it would
    only copy the gradients into flat buffers and back (without ZeRO, and on the bf16 optimizer)."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=True)
    scheduler = get_scheduler(
        spec.lr_scheduler_type, optimizer, num_warmup_steps=spec.num_warmup_steps, num_training_steps=total_steps
    )
    config = engine_config(deepspeed_config, precision=precision, world=world)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    engine.checkpoint_engine = checkpoint_engine()  # its training state in safetensors and JSON, not pickle
    if engine.dp_world_size == 1 and (
        engine.zero_optimization_stage() == 0 or type(engine.optimizer).__name__ == "BF16_Optimizer"
    ):  # (ZeRO's own optimizers move their gradients in the all-reduce, even on one process)
        engine.enable_backward_allreduce = False
    return engine


@dataclass(frozen=True)
class OptimizerChoice:
    """Which optimizer path the engine takes for a plan: ``kind`` "zero" (ZeRO's own, at the plan's ``stage``),
    "bf16" (DeepSpeed's flat BF16_Optimizer, fp32 gradient accumulation) or "torch" (torch's AdamW itself);
    ``unsharded_stage``: the plan's stage 1 or 2 on one process, which has nothing to shard (else 0)."""

    kind: str
    stage: int
    unsharded_stage: int = 0

    def words(self) -> str:
        """The path in words, as the run's first lines and its lineage say it."""
        if self.kind == "zero":
            return f"ZeRO stage {self.stage} optimizer"
        what = "bf16 optimizer (fp32 gradient accumulation)" if self.kind == "bf16" else "torch AdamW"
        why = self.unsharded_stage and f" (one process: ZeRO stage {self.unsharded_stage} has nothing to shard)"
        return what + (why or "")


def engine_config(deepspeed_config: dict[str, Any], *, precision: str, world: int) -> dict[str, Any]:
    """The plan's DeepSpeed config as the engine is given it: in ``precision``, with DeepSpeed's throughput timer
    off (it waits for the device at every forward and step).

    One process has nothing to shard: ZeRO stages 1 and 2 (without offloading) train there as without ZeRO, sparing
    their flat gradient buffers and per-parameter hooks. In bf16 without ZeRO, DeepSpeed's flat ``BF16_Optimizer``
    (ZeRO stage 1 to DeepSpeed, gradients accumulated in fp32): DeepSpeed's default there wraps the optimizer in its
    per-parameter fp16 optimizer and accumulates gradients in bf16, which loses precision over micro-batches. (On
    several processes a plan's stage 0 in bf16 so shards the fp32 optimizer state, as ZeRO stage 1 does.)"""
    config = {
        **deepspeed_config, "bf16": {"enabled": precision == "bf16"},
        "timers": {"throughput": {"enabled": False}},
    }  # fmt: skip
    zero = dict(config.get("zero_optimization") or {})
    choice = choose_optimizer(deepspeed_config, precision=precision, world=world)
    if choice.kind == "bf16":
        config["zero_optimization"] = {**zero, "stage": 1}
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    elif choice.kind == "torch":
        config["zero_optimization"] = {**zero, "stage": 0}
    return config


def choose_optimizer(deepspeed_config: dict[str, Any], *, precision: str, world: int) -> OptimizerChoice:
    """How the engine updates the weights for the plan's DeepSpeed config, in ``precision`` on ``world`` processes."""
    zero = deepspeed_config.get("zero_optimization") or {}
    stage = int(zero.get("stage", 0))
    offloaded = any(
        (zero.get(key) or {}).get("device", "none") != "none" for key in ("offload_optimizer", "offload_param")
    )
    unsharded = stage == 0 or (world == 1 and stage in (1, 2) and not offloaded)
    if not unsharded:
        return OptimizerChoice("zero", stage)
    bf16 = precision == "bf16" and (stage <= 1 or world == 1) and not offloaded
    return OptimizerChoice("bf16" if bf16 else "torch", stage, unsharded_stage=stage)


def optimizer_path(deepspeed_config: dict[str, Any], *, precision: str, world: int) -> str:
    """How the engine updates the weights, in words (the run's first lines and its lineage say it)."""
    return choose_optimizer(deepspeed_config, precision=precision, world=world).words()
