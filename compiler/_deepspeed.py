"""Materialize the DeepSpeed config a run passes to ``deepspeed.initialize``, from the spec or a user's file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ftc.errors import Problem
from ftc.spec import LoadedSpec
from ftc.spec.plan_checks import deepspeed_problems
from ftc.spec.reading import ChangedSincePinned, MiB, NotReadable, finite_json, read_pinned_text
from ftc.spec.schemas import plan_schema

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


def deepspeed_config(
    loaded: LoadedSpec,
    world_size: int,
    file_path: Path | None,
    *,
    hidden_size: int | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """The config for ``world_size`` processes. A user's file (pinned by its sha256 ``digest``: the plan carries
    the settings of exactly those bytes) keeps its settings; its "auto" values are filled from
    the spec (and ZeRO's bucket sizes from the model's ``hidden_size``, as transformers' DeepSpeed integration fills
    them), and values that contradict the spec become problems, as do settings a plan may not carry (the plan's
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
        config = _from_file(loaded, file_path, batch, world_size, hidden_size, digest)
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


def _from_file(
    loaded: LoadedSpec,
    file_path: Path,
    batch: dict[str, Any],
    world_size: int,
    hidden_size: int | None,
    digest: str | None,
) -> dict[str, Any]:
    at = ("deepspeed", "config_path")
    try:  # a DeepSpeed file is a few KiB of finite JSON; a regular file only
        config = finite_json(read_pinned_text(file_path, sha256=digest, limit=MiB, what="DeepSpeed config"))
    except ChangedSincePinned as exc:
        loaded.problems.append(loaded.problem(at, str(exc), exc.fix, kind="changed"))
        return dict(batch)
    except (NotReadable, ValueError) as exc:
        loaded.problems.append(
            loaded.problem(at, f"the DeepSpeed config is not readable JSON: {exc}", "fix the file", kind="input")
        )
        return dict(batch)
    if not isinstance(config, dict):
        loaded.problems.append(loaded.problem(at, "the DeepSpeed config is not a JSON object", "fix the file"))
        return dict(batch)
    config = copy.deepcopy(config)
    _take_optimizer_and_scheduler(loaded, at, config)
    for key, value in batch.items():
        found = config.get(key, "auto")
        if found == "auto":
            config[key] = value
        elif found != value:
            loaded.problems.append(_batch_problem(loaded, at, key, found, value, world_size))
    zero = config.get("zero_optimization")
    if isinstance(zero, dict):
        _fill_zero(loaded, at, zero, hidden_size)
        if zero.get("stage") == 3:
            zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    _fill_half_precision(loaded, at, config)
    _whole_numbers(config, plan_schema()["$defs"]["deepspeed"])
    left = _autos_left(config)
    for path in left:
        loaded.problems.append(
            loaded.problem(
                at,
                f'the DeepSpeed config has {path}: "auto", which ftc does not fill (it fills the batch sizes, '
                "gradient_accumulation_steps, gradient_clipping, bf16/fp16 and, from the model's hidden_size, "
                "reduce_bucket_size, stage3_prefetch_bucket_size and stage3_param_persistence_threshold)",
                f"set {path} to a number in the file",
            )
        )
    for line in deepspeed_problems({k: v for k, v in config.items() if k not in ("optimizer", "scheduler")}):
        if left and "'auto' is not" in line:
            continue  # said above
        loaded.problems.append(_allow_list_problem(loaded, at, line))
    return config


#: DeepSpeed sections that write files or report somewhere (a plan and the checkpoints that carry it hold none)
_WRITERS = ("tensorboard", "wandb", "csv_monitor", "comet", "flops_profiler", "aio", "checkpoint", "autotuning")


def _allow_list_problem(loaded: LoadedSpec, at: tuple, line: str) -> Problem:
    """A setting of the file outside the plan's allow-list: a section that writes or reports (ftc's own files and
    tracker do that), or a setting ftc does not carry or a value it does not take (said as such)."""
    found = line.removeprefix("$: ")
    if any(f"'{name}'" in line for name in _WRITERS) or "nvme" in line:
        return loaded.problem(
            at,
            f"the DeepSpeed config: {found}; a plan carries no monitor, profiler, checkpoint or NVMe section "
            "(nothing that writes files or reports anywhere)",
            "remove it from the file; ftc writes metrics.jsonl and the spec's logger feeds a tracker",
        )
    return loaded.problem(
        at,
        f"the DeepSpeed config: {found}; a plan carries the batch, clipping, precision and ZeRO settings ftc "
        "takes (docs/spec.md, deepspeed.config_path)",
        "remove that setting from the file, or give it a value ftc takes",
    )


#: DeepSpeed's schedulers ftc's schedules match (lr_scheduler_type), as transformers' integration pairs them
_SCHEDULERS = {"WarmupLR": ("constant_with_warmup", "constant"), "WarmupDecayLR": ("linear",)}


def _take_optimizer_and_scheduler(loaded: LoadedSpec, at: tuple, config: dict[str, Any]) -> None:
    """An "optimizer" or "scheduler" section is taken (and not carried: the spec holds its settings) when it describes
    what ftc builds from the spec: AdamW with learning_rate, weight_decay and torch's betas and eps, and the spec's
    schedule with its linear warmup from 0. Its "auto"s are those values; anything else is a problem."""
    spec = loaded.spec
    warmup = spec.num_warmup_steps if spec.lr_scheduler_type != "constant" else 0  # ftc's constant has no warmup
    wanted = {
        "optimizer": (
            ("Adam", "AdamW"),
            {"lr": spec.learning_rate, "weight_decay": spec.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8},
            {"betas": [0.9, 0.999], "eps": 1e-8},  # DeepSpeed's, where the file leaves a value out
            {"adam_w_mode": (True,), "torch_adam": (True, False)},  # AdamW, torch's or not: ftc's is torch's
        ),
        "scheduler": (
            tuple(k for k, kinds in _SCHEDULERS.items() if spec.lr_scheduler_type in kinds),
            {"warmup_min_lr": 0, "warmup_max_lr": spec.learning_rate, "warmup_num_steps": warmup},
            {"warmup_min_lr": 0, "warmup_type": "log"},  # log: ftc warms up linearly
            {"warmup_type": ("linear",) if warmup else ("linear", "log"), "total_num_steps": ()},
        ),
    }
    for name, (types, ours, defaults, allowed) in wanted.items():
        section = config.pop(name, None)
        if section is None:
            continue
        differ = _section_differences(section, types, ours, defaults, allowed)
        if differ:
            builds = "AdamW" if name == "optimizer" else f"{spec.lr_scheduler_type} schedule"
            loaded.problems.append(
                loaded.problem(
                    at,
                    f'the DeepSpeed config\'s "{name}" is not the {builds} ftc builds from the spec: '
                    + "; ".join(differ),
                    f'set those values to "auto" (or remove "{name}") and set learning_rate, weight_decay, '
                    "lr_scheduler_type and num_warmup_steps in the spec",
                )
            )


def _section_differences(
    section: Any, types: tuple, ours: dict[str, Any], defaults: dict[str, Any], allowed: dict[str, tuple]
) -> list[str]:
    """What ``section`` says that is not ``ours``: its type, and each parameter given (or left to DeepSpeed's
    ``defaults``) that is neither "auto", ours, nor ``allowed``."""
    params = section.get("params", {}) if isinstance(section, dict) else None
    if not isinstance(params, dict):
        return ["not an object of type and params"]
    differ = [f"{key} (ftc takes only type and params)" for key in section if key not in ("type", "params")]
    if section.get("type") not in types:
        matching = " or ".join(types) or "none of DeepSpeed's"
        differ.append(f"type {section.get('type')!r} (ftc: {matching})")
    given = {**{k: v for k, v in defaults.items() if k not in params}, **params}
    for key in [k for k in ours if k not in given]:
        differ.append(f"{key} left to DeepSpeed's default (ftc: {json.dumps(ours[key])})")
    for key, value in given.items():
        if value == "auto" or (key in ours and value == ours[key]) or value in allowed.get(key, ()):
            continue
        differ.append(f"{key} {json.dumps(value)}" + (f" (ftc: {json.dumps(ours[key])})" if key in ours else ""))
    return differ


#: ZeRO settings a file may leave "auto", and what transformers' DeepSpeed integration fills them with from the
#: model's hidden size (its HfTrainerDeepSpeedConfig.trainer_config_finalize)
_BY_HIDDEN_SIZE = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}
#: an older name DeepSpeed still reads (the plan carries the current one)
_RENAMED = {"gather_16bit_weights_on_model_save": "stage3_gather_16bit_weights_on_model_save"}


def _fill_zero(loaded: LoadedSpec, at: tuple, zero: dict[str, Any], hidden_size: int | None) -> None:
    for old, new in _RENAMED.items():
        if old in zero:
            value = zero.pop(old)
            if zero.setdefault(new, value) != value:
                loaded.problems.append(
                    loaded.problem(at, f"the DeepSpeed config sets {old} and {new} apart", f"keep only {new}")
                )
    for key, fill in _BY_HIDDEN_SIZE.items():
        if zero.get(key) != "auto":
            continue
        if hidden_size is None:
            loaded.problems.append(
                loaded.problem(
                    at,
                    f'the DeepSpeed config has zero_optimization.{key}: "auto", which ftc fills from the model\'s '
                    "hidden_size, and the model's config.json is not on this machine at compile time",
                    f"set zero_optimization.{key} to a number in the file",
                )
            )
        else:
            zero[key] = fill(hidden_size)


def _fill_half_precision(loaded: LoadedSpec, at: tuple, config: dict[str, Any]) -> None:
    """fp16: ftc trains in bf16 or fp32 (``precision``), so an "auto" or false fp16 section is off, and on is a
    problem. bf16 "auto" is the spec's precision, and stays "auto" (decided by the device) with precision auto."""
    fp16 = config.get("fp16")
    if isinstance(fp16, dict) and fp16.get("enabled") in ("auto", False):
        fp16["enabled"] = False
    elif isinstance(fp16, dict) and fp16.get("enabled") is True:
        loaded.problems.append(
            loaded.problem(
                at,
                "the DeepSpeed config turns fp16 on; ftc trains in bf16 or fp32 (the spec's precision)",
                'set "fp16": {"enabled": false} (or "auto") in the file, and precision: bf16 in the spec',
            )
        )
    bf16 = config.get("bf16")
    if isinstance(bf16, dict) and bf16.get("enabled") == "auto" and loaded.spec.precision != "auto":
        bf16["enabled"] = loaded.spec.precision == "bf16"


def _whole_numbers(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Whole numbers written as floats (``5e8``), where the plan's schema wants an integer, become integers."""
    for key, rule in schema.get("properties", {}).items():
        value = config.get(key)
        if isinstance(value, dict):
            _whole_numbers(value, rule)
        elif rule.get("type") == "integer" and isinstance(value, float) and value.is_integer():
            config[key] = int(value)


def _autos_left(config: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _autos_left(value, path + ".")
        elif value == "auto" and path != "bf16.enabled":
            found.append(path)
    return found


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
