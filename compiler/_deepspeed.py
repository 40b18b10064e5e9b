"""Materialize the DeepSpeed config a run passes to ``deepspeed.initialize``, from the spec or a user's file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ftc.spec import LoadedSpec
from ftc.spec.plan_checks import deepspeed_problems

__all__ = ["deepspeed_config"]

_NEVER_PRINT = 2**31 - 1  # ftc reports progress itself


def _zero_section(stage: int, offload_optimizer: bool, offload_param: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        # without this, saving under ZeRO-3 writes empty tensors
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return zero


def deepspeed_config(loaded: LoadedSpec, world_size: int, file_path: Path | None) -> dict[str, Any]:
    """The config for ``world_size`` processes. A user's file keeps its settings; its "auto" values are filled from
    the spec, and values that contradict the spec become problems, as do settings a plan may not carry (the plan's
    ``deepspeed`` section is an allow-list: no monitor, profiler or file path)."""
    spec = loaded.spec
    batch = {
        "train_micro_batch_size_per_gpu": spec.train_batch_size_per_device,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "train_batch_size": spec.global_batch_size,
        "gradient_clipping": spec.max_grad_norm if spec.max_grad_norm is not None else 0.0,
    }
    ds = spec.deepspeed
    config: dict[str, Any] = {"zero_optimization": _zero_section(ds.zero_stage, ds.offload_optimizer, ds.offload_param)}
    if file_path is not None:
        config = _from_file(loaded, file_path, batch, world_size)
    else:
        config.update(batch)
    # ftc's loop owns the accumulation boundary (every step() applies an update), so a short last step of an
    # epoch needs no padding with repeated data
    config["managed_gradient_accumulation"] = False
    # ftc builds a torch AdamW: DeepSpeed's own optimizers compile C++ on first use, and ZeRO must accept it
    config.setdefault("zero_allow_untested_optimizer", True)
    config.setdefault("zero_force_ds_cpu_optimizer", False)
    config.setdefault("steps_per_print", _NEVER_PRINT)
    config.setdefault("wall_clock_breakdown", False)
    if spec.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif spec.precision == "fp32":
        config["bf16"] = {"enabled": False}
    return config


def _from_file(loaded: LoadedSpec, file_path: Path, batch: dict[str, Any], world_size: int) -> dict[str, Any]:
    at = ("deepspeed", "config_path")
    try:
        config = json.loads(file_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        loaded.problems.append(
            loaded.problem(at, f"the DeepSpeed config is not readable JSON: {exc}", "fix the file", kind="input")
        )
        return dict(batch)
    if not isinstance(config, dict):
        loaded.problems.append(loaded.problem(at, "the DeepSpeed config is not a JSON object", "fix the file"))
        return dict(batch)
    config = copy.deepcopy(config)
    for section in ("optimizer", "scheduler"):
        if section in config:
            loaded.problems.append(
                loaded.problem(
                    at,
                    f'the DeepSpeed config has an "{section}" section; ftc builds AdamW and the schedule from '
                    "learning_rate, lr_scheduler_type and num_warmup_steps",
                    f'remove "{section}" from the file and set those keys in the spec',
                )
            )
    for key, value in batch.items():
        found = config.get(key, "auto")
        if found == "auto":
            config[key] = value
        elif found != value:
            loaded.problems.append(_batch_problem(loaded, at, key, found, value, world_size))
    zero = config.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("stage") == 3:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    for line in deepspeed_problems({k: v for k, v in config.items() if k not in ("optimizer", "scheduler")}):
        loaded.problems.append(
            loaded.problem(
                at,
                f"the DeepSpeed config: {line.removeprefix('$: ')}; a plan carries only the batch, clipping, "
                "precision and ZeRO settings (no monitor, profiler, checkpoint or NVMe section: nothing that writes "
                "files or reports anywhere)",
                "remove it from the file; ftc writes metrics.jsonl and the spec's logger feeds a tracker",
            )
        )
    return config


def _batch_problem(loaded: LoadedSpec, at: tuple, key: str, found: Any, value: Any, world_size: int):
    spec = loaded.spec
    if key == "train_batch_size":
        per_step = spec.train_batch_size_per_device * world_size
        divides = isinstance(found, int) and found % per_step == 0
        why = (
            f"the file's train_batch_size {found} needs gradient_accumulation_steps {found // per_step}"
            if divides
            else f"the file's train_batch_size {found} is not a multiple of "
            f"train_batch_size_per_device x num_devices = {per_step}"
        )
        return loaded.problem(
            at,
            f"{why}, but the spec gives {spec.train_batch_size_per_device} x {spec.gradient_accumulation_steps}"
            f" x {world_size} = {value}",
            'set "train_batch_size": "auto" in the file, or change the spec so the product matches',
        )
    spec_key = {
        "train_micro_batch_size_per_gpu": "train_batch_size_per_device",
        "gradient_clipping": "max_grad_norm",
    }.get(key, key)
    return loaded.problem(
        at,
        f"the file's {key} is {found!r} but the spec's {spec_key} is {value!r}",
        f'set "{key}": "auto" in the file, or make {spec_key} agree',
    )
