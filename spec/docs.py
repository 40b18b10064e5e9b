"""The spec reference page (docs/spec.md), generated from job.schema.json so the two cannot drift apart.

Regenerate with ``ftc schema --markdown > docs/spec.md``; a test fails when the committed page is stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .schemas import _object_branch, _resolve, job_schema

__all__ = ["render_spec_reference"]


#: definitions documented once in a section of their own (a key that takes one names it instead of repeating it)
_SECTIONS = {"#/$defs/dvc_location": ("DVC location", "dvc-location")}


def _type(schema: dict, root: dict) -> str:
    if schema.get("$ref") in _SECTIONS:
        title, anchor = _SECTIONS[schema["$ref"]]
        return f"[{title}](#{anchor})"
    schema = _resolve(schema, root)
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(_type(b, root) for b in schema.get("oneOf", schema.get("anyOf")))
    t = schema.get("type", "any")
    if "properties" in schema and "$ref" not in schema:
        t = "object"
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and "items" in schema:
        return f"list of {_type(schema['items'], root)}"
    return t


def _rows(schema: dict, root: dict, prefix: str = "") -> Iterator[tuple[str, bool, dict]]:
    if any(b.get("$ref") in _SECTIONS for b in [schema, *schema.get("anyOf", [])]):
        return  # documented in its own section
    obj = _object_branch(schema, root)
    if obj is None:
        return
    required = set(obj.get("required", []))
    for key, sub in obj["properties"].items():
        name = prefix + key
        yield name, key in required, sub
        yield from _rows(sub, root, name + ".")


def _default(sub: dict, root: dict) -> str:
    if "default" not in sub:
        return ""
    value = sub["default"]
    if value == {} and _object_branch(sub, root) is not None:  # its keys' defaults, in the rows below it
        return "(see below)"
    return f"`{json.dumps(value)}`"


def render_spec_reference() -> str:
    root = job_schema()
    lines = [
        "# Job spec reference",
        "",
        "<!-- generated from spec/job.schema.json by `ftc schema --markdown`; do not edit by hand -->",
        "",
        root["description"],
        "",
        f"Schema id: `{root['$id']}` (JSON Schema draft 2020-12). Print it with `ftc schema`.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    lines += _table(root, root)
    for ref, (title, _) in _SECTIONS.items():
        sub = _resolve({"$ref": ref}, root)
        lines += [
            "",
            f"## {title}",
            "",
            sub["description"],
            "",
            "| key | type | default | description |",
            "|---|---|---|---|",
        ]
        lines += _table(sub, root)
    return "\n".join(lines) + "\n"


def _table(schema: dict, root: dict) -> list[str]:
    lines = []
    for name, required, sub in _rows(schema, root):
        description = sub.get("description", "").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")
        key = f"`{name}`" + (" (required)" if required else "")
        lines.append(f"| {key} | {_type(sub, root)} | {_default(sub, root)} | {description} |")
    return lines
