"""``ftc schema``: the job spec's JSON Schema, the plan's or the lineage record's, or the spec reference page."""

from __future__ import annotations

import json

import click


@click.command("schema")
@click.option("--plan", "which", flag_value="plan", help="Print the run plan's schema instead.")
@click.option("--lineage", "which", flag_value="lineage", help="Print the lineage record's schema instead.")
@click.option("--markdown", "which", flag_value="markdown", help="Print the spec reference page (docs/spec.md).")
def schema_command(which: str | None) -> None:
    """Print the job spec's JSON Schema (draft 2020-12)."""
    from ftc.spec import job_schema, lineage_schema, plan_schema

    if which == "markdown":
        from ftc.spec.docs import render_spec_reference

        click.echo(render_spec_reference(), nl=False)
        return
    click.echo(json.dumps({"plan": plan_schema, "lineage": lineage_schema}.get(which or "", job_schema)(), indent=2))
