"""The JSON Schemas, schema validation as a list of actionable problems, and filling in defaults."""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ftc.errors import Problem
from ftc.spec.canonical import canonical_json, sha256_bytes

from ._source import SpecSource, json_path

__all__ = [
    "apply_defaults",
    "job_schema",
    "lineage_schema",
    "plan_schema",
    "schema_problems",
    "validator",
    "without_invalid_keys",
]


@functools.cache
def _text(name: str) -> str:
    return (Path(__file__).parent / name).read_text(encoding="utf-8")  # not importlib.resources: 8 ms of imports


@functools.cache
def _load(name: str) -> dict:
    return json.loads(_text(name))


def job_schema() -> dict:
    """The job spec schema (spec/job.schema.json). Callers must not mutate it."""
    return _load("job.schema.json")


def plan_schema() -> dict:
    """The run plan schema (spec/plan.schema.json). Callers must not mutate it."""
    return _load("plan.schema.json")


def lineage_schema() -> dict:
    """The lineage record schema (spec/lineage.schema.json). Callers must not mutate it."""
    return _load("lineage.schema.json")


@functools.cache
def validator(name: str):
    """The jsonschema validator of schema file ``name`` (formats checked)."""
    import jsonschema  # ~0.1 s to import: only when something is validated

    schema = _load(name)
    base = jsonschema.validators.validator_for(schema)
    # JSON Schema counts 10.0 as an integer and has no NaN or infinity; Python's YAML and JSON readers produce all
    # three (`num_epochs: 1e1`, `learning_rate: .nan`), and none of them can be trained with or written canonically
    types = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_finite_number})
    cls = jsonschema.validators.extend(base, type_checker=types)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _is_integer(checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(checker: Any, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return target
    return schema


def _object_branch(schema: dict, root: dict) -> dict | None:
    """The object-shaped schema inside ``schema`` (following $ref and oneOf), if there is one."""
    schema = _resolve(schema, root)
    if "properties" in schema:
        return schema
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        found = _object_branch(branch, root)
        if found is not None:
            return found
    return None


def _known_keys(schema: dict, root: dict, at: tuple = ()) -> Iterable[tuple[str, tuple]]:
    """Every (key, path) the schema knows, for suggesting the right place of a misplaced key."""
    obj = _object_branch(schema, root)
    if obj is None:
        return
    for key, sub in obj.get("properties", {}).items():
        yield key, at + (key,)
        yield from _known_keys(sub, root, at + (key,))


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


#: unknown keys described one by one (each with the closest known key); the rest are counted
_MAX_UNKNOWN = 20


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def schema_problems(
    source: SpecSource, schema_name: str = "job.schema.json", *, remember_in: Path | None = None
) -> list[Problem]:
    """Every schema violation in ``source``, each with its JSON path, line, found value and a fix. With
    ``remember_in`` (a folder), a document found valid is remembered there and not validated again."""
    marker = _valid_marker(source.data, schema_name, remember_in) if remember_in is not None else None
    if marker is not None and marker.exists():
        return []
    root = _load(schema_name)
    problems: list[Problem] = []
    errors = sorted(validator(schema_name).iter_errors(source.data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        problems.extend(_describe(error, source, root))
    if not problems and marker is not None:
        _touch(marker)
    return problems


def _valid_marker(data: Any, schema_name: str, folder: Path) -> Path | None:
    """Where the fact "this document is valid under this exact schema" is remembered.

    Validation is a pure function of the two, so a spec recompiled unchanged skips it, and with it the import of
    jsonschema (most of a recompile's start-up). Only successes are remembered: a failing spec is validated again
    so every problem is reported. None when the document cannot be put in canonical form.
    """
    try:
        key = sha256_bytes(_text(schema_name).encode() + b"\0" + canonical_json(data)).split(":")[1]
    except (TypeError, ValueError):
        return None
    return folder / key[:2] / key


def _touch(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only cache only costs the next compile a validation


def _describe(error, source: SpecSource, root: dict) -> list[Problem]:
    path = tuple(error.absolute_path)
    kind = error.validator

    def problem(message: str, hint: str = "", at: tuple = path, **extra) -> Problem:
        return Problem(json_path(at), message, hint, file=source.name, line=source.line_of(at), **extra)

    if kind in ("oneOf", "anyOf"):
        return _describe_alternatives(error, source, root, problem)
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        everywhere = list(_known_keys(root, root))
        out = []
        unknown = sorted(k for k in error.instance if k not in known)
        if len(unknown) > _MAX_UNKNOWN:  # one line for the rest: a spec with thousands of stray keys is not a spec
            rest = len(unknown) - _MAX_UNKNOWN
            out.append(problem(f"{rest} more unknown keys", "remove them; known keys here: " + ", ".join(known)))
        for key in unknown[:_MAX_UNKNOWN]:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            elsewhere = [p for k, p in everywhere if k == key and p[:-1] != path]
            if close:
                hint = f"did you mean `{close[0]}`?"
            elif elsewhere:
                hint = f"`{key}` belongs at {json_path(elsewhere[0])}; move it there"
            else:
                hint = "remove it; known keys here: " + ", ".join(known)
            message = "unknown key" + (f"; did you mean `{close[0]}`?" if close else "")
            out.append(problem(message, hint if not close else "rename it", at=path + (key,)))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        sub = _object_branch(error.schema, root) or {}
        description = sub.get("properties", {}).get(missing, {}).get("description", "")
        return [problem(f"missing required key `{missing}`", f"add `{missing}`: {description}".rstrip(": "))]
    if kind == "type":
        expected = (
            error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        )
        return [
            problem(
                f"expected {expected}, got {_json_type(error.instance)}",
                f"give {_article(expected)} {expected}",
                value=error.instance,
            )
        ]
    if kind == "enum":
        choices = ", ".join(map(str, error.validator_value))
        close = difflib.get_close_matches(str(error.instance), [str(c) for c in error.validator_value], n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"choose one of: {choices}"
        return [problem(f"must be one of: {choices}", hint, value=error.instance)]
    if kind == "const":
        return [
            problem(
                f"must be {error.validator_value!r}",
                f"set it to {error.validator_value!r} or remove it",
                value=error.instance,
            )
        ]
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        rule = f"{bounds[kind]} {error.validator_value}"
        return [problem(f"must be {rule}", f"use a value {rule}", value=error.instance)]
    if kind == "minLength":
        return [problem("must not be empty", "give a non-empty string", value=error.instance)]
    if kind == "minItems":
        return [problem(f"needs at least {error.validator_value} item(s)", "add items or remove the key")]
    if kind == "uniqueItems":
        return [problem("has duplicate items", "list each item once", value=error.instance)]
    return [problem(error.message, "see docs/spec.md for this key", value=error.instance)]


def _describe_alternatives(error, source, root, problem) -> list[Problem]:
    # Keep the alternatives whose type fits the value (a mapping given for "object or null" means the
    # object branch): its own errors are what the user needs to see, not "is not valid under any schema".
    by_branch: dict[int, list] = {}
    for sub in error.context:
        by_branch.setdefault(sub.schema_path[0], []).append(sub)
    fitting = {
        i: subs
        for i, subs in by_branch.items()
        if not any(s.validator in ("type", "const", "enum") and not s.relative_path for s in subs)
    }
    if len(fitting) == 1:
        (subs,) = fitting.values()
        return [p for sub in subs for p in _describe(sub, source, root)]
    types = []
    for branch in error.validator_value:
        branch = _resolve(branch, root)
        t = branch.get("type") or ("one of " + "/".join(map(str, branch["enum"])) if "enum" in branch else "value")
        types.extend(t if isinstance(t, list) else [t])
    expected = " or ".join(dict.fromkeys(types))
    return [
        problem(
            f"expected {expected}, got {_json_type(error.instance)}",
            f"give {_article(expected)} {expected}",
            value=error.instance,
        )
    ]


def without_invalid_keys(data: Any, problems: list[Problem]) -> dict | None:
    """``data`` minus the top-level keys that have schema problems (they fall back to defaults), so the semantic
    checks can still run and report in the same pass. None when the root itself is unusable."""
    if not isinstance(data, dict):
        return None
    bad_top = set()
    for p in problems:
        parts = p.where[2:].replace("[", ".").split(".") if p.where.startswith("$.") else []
        if not parts:
            return None  # a problem at the root (a required key is missing): nothing to check against
        bad_top.add(parts[0])
    return {k: v for k, v in data.items() if k not in bad_top}


def apply_defaults(data: dict, schema_name: str = "job.schema.json") -> dict:
    """A copy of ``data`` with every schema default filled in, recursively (the normalized spec)."""
    root = _load(schema_name)
    return _fill(copy.deepcopy(data), root, root)


def _fill(value: Any, schema: dict, root: dict) -> Any:
    obj = _object_branch(schema, root)
    if obj is None or not isinstance(value, dict):
        return value
    for key, sub in obj.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = _fill(value[key], sub, root)
    return value
