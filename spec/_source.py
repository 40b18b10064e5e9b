"""Read a YAML or JSON spec and remember the line of every key, so errors can point at the text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ftc.errors import Problem, SpecInvalid

__all__ = ["SpecSource", "read_spec_source", "json_path"]

Path_ = tuple  # a JSON path as a tuple of keys and indices


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``; everyone writes ``1e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class SpecSource:
    """The parsed document, where it came from, and the line of each JSON path (key lines for mappings)."""

    path: Path | None
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<spec>"

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def line_of(self, path: Path_) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def json_path(path: Path_) -> str:
    """``("lora_config", "target_modules", 0)`` -> ``$.lora_config.target_modules[0]``."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


#: how many values a spec may hold once its YAML aliases are expanded, and how deeply they may nest: a spec has
#: dozens; the limits stop alias bombs ("billion laughs") and runaway nesting before anything walks them
MAX_VALUES = 20_000
MAX_DEPTH = 32


def read_spec_source(text: str, path: Path | None = None) -> SpecSource:
    """Parse ``text`` (YAML or JSON). Syntax errors, duplicate keys and a document too large or too deep once its
    aliases are expanded raise :class:`SpecInvalid` with their line."""
    name = str(path) if path else "<spec>"
    try:
        loader = _Loader(text)  # reads the whole text: a character YAML does not allow fails here
    except yaml.YAMLError as exc:
        problem = Problem("$", f"not valid YAML/JSON: {exc}", "remove the character, or save the file as UTF-8 text")
        raise SpecInvalid([replace(problem, file=name)], name) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecInvalid(
                [Problem("$", "the spec is empty", "write at least model_id and train_path", file=name)], name
            )
        _check_size(node, name)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"not valid YAML/JSON: {exc.problem or exc}"
        hint = "fix the syntax at this line"
        text_line = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
        if '"""' in text_line:
            hint = 'triple quotes are not YAML: write one pair, e.g. system: "{instruction}"'
        raise SpecInvalid([Problem("$", message, hint, file=name, line=line)], name) from None
    except RecursionError:
        too = f"nested too deeply (more than {MAX_DEPTH} levels are allowed)"
        raise SpecInvalid([Problem("$", f"the document is {too}", "remove the nesting", file=name)], name) from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    problems: list[Problem] = []
    _index_lines(node, (), lines, problems, name)
    if problems:
        raise SpecInvalid(problems, name)
    return SpecSource(path=path, data=data, lines=lines)


def _check_size(root: yaml.Node, name: str) -> None:
    """Refuse a document with more than MAX_VALUES values (aliases counted each time they are used) or nested more
    than MAX_DEPTH deep, walking at most MAX_VALUES nodes."""
    count, stack = 0, [(root, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            if count > MAX_VALUES:
                too = f"holds more than {MAX_VALUES} values (each use of a YAML alias counted)"
            else:
                too = f"is nested more than {MAX_DEPTH} deep"
            line = node.start_mark.line + 1
            hint = "a spec holds settings, not data: remove what repeats (aliases such as *name) or the nesting"
            raise SpecInvalid([Problem("$", f"the document {too}", hint, file=name, line=line)], name)
        if isinstance(node, yaml.MappingNode):
            stack += [(child, depth + 1) for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(child, depth + 1) for child in node.value]


def _index_lines(node: yaml.Node, at: Path_, lines: dict, problems: list, name: str) -> None:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                # `? x`, `1: x`, `null: x`, `true: x`: YAML allows keys that are not text; a spec's keys are names
                written = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                problems.append(
                    Problem(
                        json_path(at),
                        f"a key must be text; {written or 'an empty key'!r} reads as {key_node.tag.rsplit(':', 1)[-1]}",
                        "write the key name, quoted if it looks like a number or a boolean",
                        file=name,
                        line=line,
                    )
                )
                continue
            if key in seen:
                problems.append(
                    Problem(
                        json_path(at + (key,)),
                        f"duplicate key (first given on line {seen[key]}); the later value would silently win",
                        "keep one of them",
                        file=name,
                        line=line,
                    )
                )
            seen[key] = line
            lines[at + (key,)] = line
            _index_lines(value_node, at + (key,), lines, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, at + (i,), lines, problems, name)
    elif "\x00" in node.value:  # `"a\0b"` is valid YAML, but no path, name or template can hold a NUL
        problems.append(
            Problem(
                json_path(at),
                "holds a NUL character (written \\0 or \\x00), which no path, name or text here may hold",
                "remove it",
                file=name,
                line=node.start_mark.line + 1,
            )
        )
