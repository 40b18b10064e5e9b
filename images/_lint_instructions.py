"""Reading a Dockerfile: where the images' Dockerfiles are, and their text as instructions (continuation lines
joined, comments dropped), stages, ``NAME=value`` assignments and build-context sources. No rules here: the
Dockerfiles' rules are in ``_lint_dockerfiles``, the build context's in ``_lint_context``."""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

DOCKERFILES = {"cpu": "images/Dockerfile.cpu", "gpu": "images/Dockerfile.gpu"}


@dataclass
class Instruction:
    """One Dockerfile instruction: the line it starts on, its keyword (upper case) and its arguments."""

    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined and comment lines dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(p.strip() for p in pending if p.strip())
        pending = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def assignments(args: str) -> dict[str, str | None]:
    """NAME=value pairs of ARG, ENV or LABEL (ENV's old `NAME value` form too)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:]) or None}
    return {name: value for name, _, value in (t.partition("=") for t in tokens)}


def dockerfile_stages(instructions: list[Instruction]) -> tuple[list[Instruction], list[list[Instruction]]]:
    """(global ARGs before the first FROM, the stages, each starting with its FROM)."""
    head: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
        else:
            head.append(ins)
    return head, stages


def context_sources(instructions: list[Instruction]) -> list[tuple[Instruction, list[str]]]:
    """The COPY and ADD instructions that take from the build context (no --from), with their sources."""
    out = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(ins.args)
        if any(t.startswith("--from=") for t in tokens):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        out.append((ins, [posixpath.normpath(source) for source in paths[:-1]]))
    return out
