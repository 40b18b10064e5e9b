"""``ftc plan show|diff``: what a compiled plan will do, and what differs between two."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("plan")
def plan_group() -> None:
    """Inspect compiled plans."""


@plan_group.command("show")
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the plan itself.")
def plan_show(plan: Path, as_json: bool) -> None:
    """Show what PLAN will do: inputs and their pins, settings, launch, image."""
    from ftc.compiler import describe_plan
    from ftc.spec.plan import read_plan

    document = read_plan(plan)
    if as_json:  # every non-ASCII character as a JSON escape: the same plan, and nothing a terminal obeys
        click.echo(json.dumps(document.to_dict(), sort_keys=True, indent=2, ensure_ascii=True))
    else:
        click.echo(describe_plan(document))


@plan_group.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
def plan_diff(a: Path, b: Path) -> None:
    """Say what differs between plans A and B: inputs, settings, image."""
    from ftc.compiler import diff_plans
    from ftc.spec.plan import read_plan

    lines = diff_plans(read_plan(a), read_plan(b))
    click.echo("\n".join(lines) if lines else "the plans are identical")
