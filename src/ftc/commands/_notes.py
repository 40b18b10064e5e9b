"""What a command says beside its output: on stderr, so stdout stays the output (JSON, a report's path, answers)."""

from __future__ import annotations

import click


def note(line: str) -> None:
    """A line beside the output (which checkpoint a store's pointer named, a library's progress): on stderr."""
    click.echo(line, err=True)
