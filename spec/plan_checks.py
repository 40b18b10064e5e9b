"""Every way a plan document differs from what ``ftc compile`` writes: the plan schema (whose ``deepspeed`` section
is an allow-list), the job schema, every check the compiler makes on the spec's own fields, the output folder, the
launch command and ``plan_id``. A plan_id proves only that the plan is self-consistent (anyone can reseal an edited
plan), so a plan the compiler would never write is refused however it is sealed. ``ftc.spec.plan.valid_plan`` turns
these problems into the one error a plan reader raises."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftc.errors import _UNSET, Problem

from ._field_checks import spec_problems
from ._source import json_path
from .folders import system_folder
from .model import OPTIONAL_KEYS, JobSpec
from .plan_format import PLAN_VERSION, STORE_SCHEMES, launch_command, seal_plan
from .rope import unfilled
from .schemas import validator

__all__ = ["deepspeed_problems", "plan_problems"]


def _nul_strings(value: Any, at: str = "$") -> Iterator[str]:
    """Where ``value`` holds a string with a NUL character (no path, name or text in a plan may hold one)."""
    if isinstance(value, str):
        if "\x00" in value:
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_strings(key, f"{at} (a key)")
            yield from _nul_strings(item, f"{at}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_strings(item, f"{at}[{i}]")


def _field_problems(spec: dict[str, Any], *, older_spec: bool) -> list[str]:
    """The compiler's checks on the spec's own fields, run on the spec a plan carries (``raw`` is unknown there:
    a normalized spec holds every default, so checks that tell a written value from a default are the compiler's
    alone)."""
    from .schemas import apply_defaults

    def problem(at: tuple, message: str, hint: str = "", *, value: Any = _UNSET, **_: Any) -> Problem:
        return Problem(json_path(("spec", *at)), message, hint, value=value)

    try:
        typed = JobSpec.from_dict(apply_defaults(spec) if older_spec else spec)
    except (TypeError, ValueError, KeyError) as exc:
        return [f"$.spec: not a spec ftc can read ({type(exc).__name__})"]
    return [p.render() for p in spec_problems(typed, {}, problem)]


def _output_problems(output: str, folder: Path | None) -> list[str]:
    """The plan's output folder: never the root, the home folder or a system folder (``ftc.spec.folders``)."""
    if output.startswith(STORE_SCHEMES):
        return []
    path = os.path.expanduser(output)
    if not os.path.isabs(path):
        if folder is None:
            return []
        path = os.path.join(folder, path)
    why = system_folder(path)
    return [f"$.output.dir: {json.dumps(output)}: {why}: a run writes only into a folder of its own"] if why else []


def deepspeed_problems(config: Any) -> list[str]:
    """How a DeepSpeed config differs from what a plan may carry (plan.schema.json's allow-list: the keys ftc sets
    and ZeRO's tuning numbers; no monitor, profiler or file path), as readable lines."""
    from .schemas import plan_schema

    check = validator("plan.schema.json").evolve(schema=plan_schema()["$defs"]["deepspeed"])
    errors = sorted(check.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_where('$', e)}: {e.message}" for e in errors]


_DEEPSPEED_NOTE = " (a plan's DeepSpeed section holds only the settings ftc makes: no monitor, profiler or file path)"


def _rope_problems(rope: Any) -> list[str]:
    """A spec may leave a RoPE scaling's factor and lengths for the compiler to fill from the model; a plan holds
    them filled (the run, plan show and an export's config.json read them), so one left open was not compiled."""
    if not isinstance(rope, dict):
        return []
    return [f"$.spec.rope_scaling.{key}: not filled in (ftc compile writes every value)" for key in unfilled(rope)]


def _where(prefix: str, error: Any) -> str:
    return prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def plan_problems(
    plan: Any, *, older_spec: bool = False, folder: Path | None = None, remember_in: Path | None = None
) -> list[str]:
    """Every way ``plan`` differs from what `ftc compile` writes, as readable lines (with ``older_spec``, settings
    added to the spec since the plan was compiled may be absent). ``folder``: where the plan is, from which its
    relative output folder is checked. ``remember_in`` (the compiler's, never a reader's: a marker says only that
    this ftc found these exact bytes valid before): a plan found valid against the schemas is remembered there, and
    a recompile skips the schema validation (and importing jsonschema); the other checks always run."""
    problems = []
    if isinstance(plan, dict) and "plan_version" in plan and plan["plan_version"] != PLAN_VERSION:
        found = json.dumps(plan["plan_version"])
        problems.append(f"$.plan_version: this ftc reads plan version {PLAN_VERSION}, the plan is version {found}")
    marker = None
    if remember_in is not None:
        from .schemas import _valid_marker, job_schema

        marker = _valid_marker([plan, job_schema()], "plan.schema.json", remember_in)
    against_schemas = marker is None or not marker.exists()
    if against_schemas:
        errors = sorted(validator("plan.schema.json").iter_errors(plan), key=lambda e: list(map(str, e.absolute_path)))
        problems += [
            f"{_where('$', e)}: {e.message}" + (_DEEPSPEED_NOTE if list(e.absolute_path)[:1] == ["deepspeed"] else "")
            for e in errors
            if list(e.absolute_path) != ["plan_version"]
        ]
    problems += [f"{at}: holds a NUL character" for at in _nul_strings(plan)]
    if problems:
        return problems
    launch = plan["launch"]
    ours = launch_command(launch["nodes"], launch["processes_per_node"])
    if launch["command"] != ours:
        problems.append(
            f"$.launch.command: {json.dumps(launch['command'])} is not the command ftc runs for "
            f"{launch['nodes']} node(s) x {launch['processes_per_node']} process(es) ({json.dumps(ours)})"
        )
    in_spec = []
    if against_schemas:
        in_spec += [
            f"{_where('$.spec', error)}: {error.message}"
            for error in validator("job.schema.json").iter_errors(plan["spec"])
        ]
    optional = OPTIONAL_KEYS  # absent when none
    missing = [f.name for f in dataclasses.fields(JobSpec) if f.name not in plan["spec"] and f.name not in optional]
    if missing and not older_spec:  # a plan compiled before these settings existed: not normalized by this ftc
        in_spec.append(f"$.spec: no {', '.join(missing)} (the plan was compiled by an older ftc)")
    # the compiler's checks of the spec's own fields need a spec that is one
    problems += in_spec or _field_problems(plan["spec"], older_spec=older_spec)
    problems += _rope_problems(plan["spec"].get("rope_scaling"))
    problems += _output_problems(plan["output"]["dir"], folder)
    expected = seal_plan(plan)["plan_id"]
    if plan["plan_id"] != expected:
        problems.append(
            f"$.plan_id: the plan was edited after compiling "
            f"(plan_id {plan['plan_id']} but the content hashes to {expected})"
        )
    if not problems and marker is not None and against_schemas:
        from .schemas import _touch

        _touch(marker)
    return problems
