"""llmforge's job spec keys, normalized at the boundary: what its spelling of a setting means in ftc's spec.

A llmforge spec (the seed guide's tool) runs unchanged: a key ftc has under another name is an alias, turned into
ftc's setting here, once, before the typed spec is built (one setting, one place in the plan). ``LLMFORGE_KEYS``
are the keys the job schema knows only for this: they are not fields of :class:`ftc.spec.model.JobSpec`.
"""

from __future__ import annotations

from typing import Any

from ._llmforge_keys import KEYS as ALIAS_AND_NO_EFFECT_KEYS
from ._llmforge_keys import NO_EFFECT
from .model import JobSpec
from .rope import SCALING_TECHNIQUE, from_scaling_technique
from .schemas import job_schema
from .tasks import TASKS

__all__ = ["LLMFORGE_KEYS", "NO_EFFECT", "TASK_CONFIGS", "from_llmforge"]

#: a task-specific config of llmforge -> the task it implies (llmforge infers ``task`` from it)
TASK_CONFIGS = {t.config: t.name for t in TASKS.values() if t.config is not None}

#: the task configs that are fields of the typed spec: those of the tasks ftc trains
TYPED_CONFIGS = frozenset(t.config for t in TASKS.values() if t.config is not None and t.recipe is not None)
#: keys of the job schema that are llmforge's and are normalized here (never fields of the typed spec)
LLMFORGE_KEYS = (frozenset(TASK_CONFIGS) - TYPED_CONFIGS) | {SCALING_TECHNIQUE} | ALIAS_AND_NO_EFFECT_KEYS


def from_llmforge(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a schema-valid spec as written) with llmforge's keys turned into ftc's settings."""
    out = {k: v for k, v in from_scaling_technique(data).items() if k not in LLMFORGE_KEYS}
    if "task" not in data:
        implied = [task for key, task in TASK_CONFIGS.items() if data.get(key) is not None]
        if implied:
            out["task"] = implied[0]
    config = TASKS[out.get("task", "instruction_tuning")].config
    if config in TYPED_CONFIGS and out.get(config) is None and not _required(config):
        out[config] = {}  # (task preference_tuning alone: its config's defaults, written into the plan)
    return out


def _required(config: str) -> list[str]:
    """The keys a task config must be given (none: the task takes its defaults when the config is left out)."""
    return job_schema()["$defs"][config].get("required", [])


def task_problems(spec: JobSpec, raw: dict[str, Any], problem: Any) -> list:
    """The task's problems: llmforge's tasks ftc does not train, a task config that the spec's task ignores (or two
    configs of two tasks and no task), a task without its config, and a classifier without labels or with labels no
    answer can be exactly. ``raw`` is the spec as written (empty for a spec a plan carries: its typed configs and
    task are then as written)."""
    task = spec.task
    labels = spec.classifier_config.label_tokens if spec.classifier_config else None
    out = _label_problems(task, labels, problem)
    typed = {key: getattr(spec, key) for key in TYPED_CONFIGS}
    configs = [key for key in TASK_CONFIGS if raw.get(key) is not None or typed.get(key) is not None]
    own = TASKS[task].config
    if own in TYPED_CONFIGS and typed[own] is None and not _required(own):  # (a classifier's: its labels, above)
        out.append(problem(("task",), f"task {task} has no {own}", f"give {own} ({{}} for its defaults)", value=task))
    if TASKS[task].pairs and spec.sample_packing:
        out.append(
            problem(
                ("sample_packing",),
                f"task {task} batches each pair's two answers together, padded; packing does not apply to pairs",
                "remove sample_packing (or set it to false)",
                value=True,
            )
        )
    refused = TASKS[task].refused
    if refused is not None:
        message, fix = refused
        implied_by = [key for key in configs if TASK_CONFIGS[key] == task]
        at = ("task",) if "task" in raw or not implied_by else (implied_by[0],)
        out.append(problem(at, message, fix, value=task))
    if "task" in raw or not raw:  # the task as written, not implied by a config
        out += [
            problem(
                (key,),
                f"{key} is for llmforge's {TASK_CONFIGS[key]} task, and the spec's task is {task}",
                f"remove {key} (task {task} does not use it)",
            )
            for key in configs
            if TASK_CONFIGS[key] != task
        ]
    elif len({TASK_CONFIGS[key] for key in configs}) > 1:  # (one config left out as invalid: its problem says why)
        first, *others = configs
        out += [
            problem(
                (key,),
                f"{key} is for llmforge's {TASK_CONFIGS[key]} task, and {first} for its {TASK_CONFIGS[first]} task: "
                "a spec trains one task",
                f"keep the config of the task to train, and remove {key}",
            )
            for key in others
            if TASK_CONFIGS[key] != TASK_CONFIGS[first]
        ]
    return out


def _label_problems(task: str, labels: tuple[str, ...] | None, problem: Any) -> list:
    if task == "classification" and labels is None:
        return [
            problem(
                ("task",),
                "task classification needs its labels, and there is no classifier_config",
                "give classifier_config: {label_tokens: [...]} (the labels the final answer is exactly one of)",
                value=task,
            )
        ]
    return [
        problem(
            ("classifier_config", "label_tokens", index),
            f"the label {label!r} begins or ends with white space, which an answer's text never does",
            "write the label without the white space around it",
            value=label,
        )
        for index, label in enumerate(labels or ())
        if label != label.strip()
    ]
