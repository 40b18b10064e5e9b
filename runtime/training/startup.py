"""A recipe's set-up that does not depend on what it trains: the model and tokenizer loaded as the plan says (and
said in the run's first lines), the checkpointer, what the run records of where it ran, and the metrics and
progress it reports to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat_template import chat_template
from .checkpoint import Checkpointer
from .compiled import compile_layers
from .distributed import Dist
from .engine import optimizer_path, training_dtype, training_precision
from .model import attention_for, describe_mode, kernels_for, load_model
from .progress import MetricsLog, Progress, log

__all__ = ["Loaded", "execution_of", "load_for_training", "new_checkpointer", "open_reporting"]


@dataclass(frozen=True)
class Loaded:
    """The model loaded for training (``load_model``'s), with the precision, attention and kernels it trains with."""

    model: Any
    precision: str
    attention: str
    kernels: str


def load_for_training(plan: Any, dist: Dist, paths: dict[str, Path | str]) -> Loaded:
    """The plan's model (LoRA or whole weights) and tokenizer, seeded, in the precision the device allows, its
    tokenizer carrying the spec's prompt format as its chat template (what every checkpoint carries for serving);
    the run's first lines say what is trained, where and how."""
    spec = plan.spec
    say = log if dist.main else (lambda message: None)
    cuda = dist.device.type == "cuda"
    precision = training_precision(spec.precision, cuda=cuda)
    own_weights = isinstance(paths["base_model"], Path)
    say(f"plan {plan.plan_id[:19]}…: {describe_mode(plan.mode, own_weights)} ({plan.architecture.model_id})")
    attention = attention_for(spec, cuda=cuda)
    kernels = kernels_for(spec, cuda=cuda, model_type=plan.architecture.model_type)
    checkpointing = ", activation checkpointing" if spec.activation_checkpointing else ""
    checkpointing += ", compiled layers" if spec.torch_compile else ""
    optimizer = optimizer_path(plan.deepspeed, precision=precision, world=dist.world)
    say(
        f"{dist.world} process(es) on {dist.device.type}, {precision}, ZeRO stage {plan.zero_stage} ({optimizer}), "
        f"{attention} attention, {kernels} kernels{checkpointing}"
    )

    import torch

    torch.manual_seed(spec.seed)  # new adapters' initial weights, dropout
    loaded = load_model(
        spec, plan.mode, paths["base_model"], paths.get("adapter"), dtype=training_dtype(precision),
        attention=attention, kernels=kernels,
    )  # fmt: skip
    if spec.torch_compile:  # compiled at the first forward pass
        compile_layers(loaded.model)
    if spec.generation_config.prompt_format is not None:  # checkpoints carry the format as serving reads it
        loaded.tokenizer.chat_template = chat_template(spec.generation_config.prompt_format)
    say(
        f"{loaded.trainable_parameters:,} of {loaded.total_parameters:,} parameters trainable; "
        f"tokenizer from the {loaded.tokenizer_source}"
    )
    return Loaded(loaded, precision, attention, kernels)


def new_checkpointer(plan: Any, dist: Dist) -> Checkpointer:
    """The run's checkpointer, a partial checkpoint an earlier run left removed."""
    spec = plan.spec
    checkpointer = Checkpointer(
        plan.output_path, is_lora=plan.mode != "full", zero_stage=plan.zero_stage, rank=dist.rank,
        barrier=dist.barrier, keep=spec.num_checkpoints_to_keep, model_id=spec.model_id, plan_text=plan.text(),
    )  # fmt: skip
    checkpointer.discard_partial()
    return checkpointer


def execution_of(plan: Any, dist: Dist, precision: str) -> dict[str, Any]:
    """Where and how the run trains, as every checkpoint's lineage records it."""
    return {
        "nodes": plan.launch.nodes, "processes_per_node": plan.launch.processes_per_node, "world_size": dist.world,
        "device": dist.describe_device(), "precision": precision, "zero_stage": plan.zero_stage,
        "optimizer": optimizer_path(plan.deepspeed, precision=precision, world=dist.world),
    }  # fmt: skip


def open_reporting(run: Any, global_step: int, *, resume: bool, resumed: bool) -> tuple[MetricsLog, Progress]:
    """The tracker told the run starts (or resumes at ``global_step``), metrics.jsonl opened (a resumed run keeps
    its lines up to its step), and the progress bar."""
    plan, dist = run.plan, run.dist
    if run.tracker is not None:
        run.tracker.start(plan, run.out, resumed_at=global_step if resumed else None)
    metrics = MetricsLog(
        run.out / "metrics.jsonl", enabled=dist.main, keep_until_step=global_step if resume else -1,
        also=run.tracker.log if run.tracker is not None else None,
    )  # fmt: skip
    return metrics, Progress(run.total_steps, global_step, enabled=dist.main)
