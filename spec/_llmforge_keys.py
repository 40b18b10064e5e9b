"""llmforge's spellings of ftc's settings, and its keys that mean nothing in ftc, taken at the boundary.

An alias becomes ftc's setting here, once (one setting, one place in the plan: ``gradient_checkpointing: true`` is
``activation_checkpointing: true``); a key with no effect in ftc is kept out of the typed spec and recorded. Either
way the plan's ``llmforge`` section says which llmforge key was given and what became of it, so a llmforge spec is
never silently trimmed. Where the given keys disagree (``gradient_checkpointing: true`` with
``no_gradient_checkpoint: true``), that is a problem naming both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["ALIASES", "KEYS", "NO_EFFECT", "taken_as_ftc"]

#: llmforge key -> the ftc setting it is taken as
ALIASES = {
    "gradient_checkpointing": "activation_checkpointing",
    "no_gradient_checkpoint": "activation_checkpointing",
    "flash_attention_2": "attn_implementation",
    "checkpoint_every_n_epochs": "checkpoint_and_evaluation_frequency",
    "max_num_checkpoints": "checkpoint_and_evaluation_frequency",
    "liger_kernel": "kernels",
}

#: llmforge key -> what it was in llmforge, and why it has no effect in ftc (said once: compile and plan show)
NO_EFFECT = {
    "num_data_blocks_per_device": "llmforge's Ray Data blocks per device (its data-loading plumbing; ftc reads the "
    "data itself)",
    "dataset_size_scaling_factor": "a deprecated llmforge internal flag",
    "min_update_steps": "llmforge's least number of optimizer steps when it chose num_epochs; ftc trains num_epochs",
    "max_num_checkpoints": "llmforge's number of checkpoints when no frequency is given; the spec gives one",
    "checkpoint_every_n_epochs": "null: llmforge's automatic frequency; ftc's checkpoint_and_evaluation_frequency "
    "is used",
}

#: the top-level keys this module takes (the job schema knows them; the typed spec never holds them)
KEYS = frozenset(ALIASES) | frozenset(NO_EFFECT)

#: Liger's kernels ftc applies together (kernels: liger); its loss kernels (cross_entropy,
#: fused_linear_cross_entropy) ftc never uses: its loss is its own
_LIGER_TOGETHER = ("rms_norm", "rope", "swiglu")

ProblemAt = Callable[..., Any]


def taken_as_ftc(data: dict[str, Any], problem: ProblemAt) -> tuple[dict[str, Any], dict[str, Any], list]:
    """``data`` (a schema-valid spec as written) with llmforge's aliases as ftc's settings and its no-effect keys
    left out; the plan's record of each (key -> {"given": value, "as": ftc setting or None}); and the problems
    (aliases that disagree, Liger kernels ftc cannot apply one by one)."""
    given = {key: data[key] for key in KEYS if key in data}
    out = {k: v for k, v in data.items() if k not in KEYS}
    record: dict[str, Any] = {}
    problems: list = []
    if not given:
        return out, record, problems
    candidates: dict[str, list[tuple[str, Any]]] = {}

    def offer(key: str, setting: str, value: Any) -> None:
        candidates.setdefault(setting, []).append((key, value))
        record[key] = {"given": given[key], "as": setting}

    if "gradient_checkpointing" in given:
        offer("gradient_checkpointing", "activation_checkpointing", given["gradient_checkpointing"])
    if "no_gradient_checkpoint" in given:
        offer("no_gradient_checkpoint", "activation_checkpointing", not given["no_gradient_checkpoint"])
    if "flash_attention_2" in given:  # true: ftc's fastest kernel; false: plain PyTorch attention
        offer("flash_attention_2", "attn_implementation", "auto" if given["flash_attention_2"] else "sdpa")
    _frequency(data, given, offer, record)
    if "liger_kernel" in given:
        problems += _liger(given["liger_kernel"], offer, problem)
    for key in NO_EFFECT:
        if key in given and key not in record:
            record[key] = {"given": given[key], "as": None}
    for setting, offers in candidates.items():
        problems += _agree(data, setting, offers, out, problem)
    return out, record, problems


def _frequency(data: dict[str, Any], given: dict[str, Any], offer: Callable, record: dict[str, Any]) -> None:
    """checkpoint_every_n_epochs: N is a checkpoint (and evaluation) every N epochs; max_num_checkpoints: N, with
    no frequency given, is every ceil(num_epochs / N) epochs (at most N checkpoints, as llmforge spread them)."""
    every = given.get("checkpoint_every_n_epochs")
    if every is not None:
        offer(
            "checkpoint_every_n_epochs", "checkpoint_and_evaluation_frequency", {"unit": "epochs", "frequency": every}
        )
    most = given.get("max_num_checkpoints")
    if most is not None and every is None and "checkpoint_and_evaluation_frequency" not in data:
        epochs = data.get("num_epochs", 1)
        frequency = {"unit": "epochs", "frequency": max(1, math.ceil(epochs / most))}
        offer("max_num_checkpoints", "checkpoint_and_evaluation_frequency", frequency)


def _liger(liger: dict[str, Any], offer: Callable, problem: ProblemAt) -> list:
    """enabled: kernels liger (Liger's RMSNorm, RoPE and SwiGLU, applied together), else torch. Its loss kernels
    are not ftc's (the loss is ftc's own): taken as they are, and plan show says they are not used."""
    enabled = bool(liger.get("enabled", False))
    offer("liger_kernel", "kernels", "liger" if enabled else "torch")
    kwargs = liger.get("kwargs") or {}
    off = [name for name in _LIGER_TOGETHER if kwargs.get(name, True) is False]
    if not enabled or not off:
        return []
    return [
        problem(
            ("liger_kernel", "kwargs", off[0]),
            f"ftc applies Liger's {', '.join(_LIGER_TOGETHER)} kernels together; it cannot leave out " + ", ".join(off),
            "set rms_norm, rope and swiglu true (or leave kwargs out), or liger_kernel.enabled: false for PyTorch's "
            "kernels",
            value=False,
        )
    ]


def _agree(data: dict[str, Any], setting: str, offers: list, out: dict[str, Any], problem: ProblemAt) -> list:
    """The setting the offers agree on, written into ``out``; a problem naming two that disagree (ftc's own key
    among them when the spec gives it)."""
    if setting in data:
        offers = [(setting, data[setting]), *offers]
    for key, value in offers[1:]:
        first, theirs = offers[0]
        if _normal(setting, value) != _normal(setting, theirs):
            return [
                problem(
                    (key,),
                    f"{key} and {first} disagree: both say {setting} ({key} means {_show(setting, value)}, "
                    f"{first} {_show(setting, theirs)})",
                    f"keep one of them ({setting} is ftc's name)",
                )
            ]
    out[setting] = offers[0][1]
    return []


def _normal(setting: str, value: Any) -> Any:
    if setting == "checkpoint_and_evaluation_frequency" and isinstance(value, dict):
        return (value.get("unit", "epochs"), value.get("frequency", 1))
    return value


def _show(setting: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if setting == "checkpoint_and_evaluation_frequency" and isinstance(value, dict):
        unit, frequency = _normal(setting, value)
        return f"every {frequency} {unit}"
    return str(value)
