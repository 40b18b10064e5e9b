"""A real single-process DeepSpeed engine over the tiny model, as a run builds it (``build_engine``), for the tests of
a training step and of its saved state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

__all__ = ["DEEPSPEED", "tiny_engine"]

SPEC = SimpleNamespace(learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant", num_warmup_steps=0)
DEEPSPEED = {
    "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 0}, "managed_gradient_accumulation": False,  # as a plan's (every step() updates)
}  # fmt: skip


def tiny_engine(model_path: Any, precision: str, stage: int = 0) -> Any:
    """``build_engine`` over the model at ``model_path`` in ``precision`` ("fp32", "bf16"), the plan's ZeRO
    ``stage``, with ftc's varlen attention."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register
    from ftc.runtime.training.engine import build_engine

    register()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa_varlen")
    plan = {**DEEPSPEED, "zero_optimization": {"stage": stage}}
    return build_engine(model, SPEC, plan, precision=precision, total_steps=10, world=1)
