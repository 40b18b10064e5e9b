"""``ftc data inspect``: training data as a run will see it."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group("data")
def data_group() -> None:
    """Look at training data as a run will see it."""


@data_group.command("inspect")
@click.argument("spec_or_plan", metavar="SPEC|PLAN", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to show.")
@click.option("--split", type=click.Choice(["train", "valid"]), default="train", show_default=True)
@click.option("--boundaries", is_flag=True, help="Show token boundaries as '|'.")
@click.option(
    "--color/--no-color",
    default=None,
    help="Mark trained tokens in colour (default: on a terminal), else [in brackets].",
)
def data_inspect(spec_or_plan: Path, count: int, split: str, boundaries: bool, color: bool | None) -> None:
    """Render examples of SPEC|PLAN's data exactly as training will, trained tokens marked (the assistant turns;
    every token with task: causal_lm); then statistics over the whole file (tokens, trained share, lengths against
    context_length, packing) and warnings."""
    from ftc.compiler import read_or_compile_plan
    from ftc.runtime.training.inspect import inspect_data

    plan = read_or_compile_plan(spec_or_plan)
    color = sys.stdout.isatty() if color is None else color
    click.echo(inspect_data(plan, split=split, n=count, boundaries=boundaries, color=color), color=color)
