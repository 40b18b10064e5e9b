"""``ftc data inspect``: training data as a run will see it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._notes import note


@click.group("data")
def data_group() -> None:
    """Look at training data as a run will see it."""


@data_group.command("inspect")
@click.argument("spec_or_plan", metavar="SPEC|PLAN|CHECKPOINT")
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to show.")
@click.option("--split", type=click.Choice(["train", "valid"]), default="train", show_default=True)
@click.option("--boundaries", is_flag=True, help="Show token boundaries as '|'.")
@click.option(
    "--color/--no-color",
    default=None,
    help="Mark trained tokens in colour (default: on a terminal), else [in brackets].",
)
def data_inspect(spec_or_plan: str, count: int, split: str, boundaries: bool, color: bool | None) -> None:
    """Render examples of SPEC|PLAN's data exactly as training will, trained tokens marked (the assistant turns;
    every token with task: causal_lm); then statistics over the whole file (tokens, trained share, lengths against
    context_length, packing) and warnings. A checkpoint (a folder, a run's output folder, or in a store: a checkpoint
    a run published, s3://…/checkpoints/step-N/, or the run's prefix, s3://bucket/run/) is read for the plan it
    carries, its data found where its lineage record says."""
    from ftc.lineage import in_store
    from ftc.runtime.training.inspect import inspect_data

    color = sys.stdout.isatty() if color is None else color
    if not (in_store(spec_or_plan) or Path(spec_or_plan).is_dir()):
        from ftc.compiler import read_or_compile_plan

        plan = read_or_compile_plan(Path(spec_or_plan))
        click.echo(inspect_data(plan, split=split, n=count, boundaries=boundaries, color=color), color=color)
        return
    from ftc.lineage import load, local_checkpoint
    from ftc.lineage.plan import checkpoint_plan, refuse_foreign_endpoints
    from ftc.lineage.verify import verified_record

    with local_checkpoint(spec_or_plan, say=note) as found:  # its data is read while the plan's folder is there
        # fetched from a store: verified against its marker already; a folder here: its files re-hashed now
        record = load(found.folder) if found.digests is not None else verified_record(found.folder, *_REFUSED)
        plan = checkpoint_plan(found.folder, record)
        refuse_foreign_endpoints(plan, {"base_model", "adapter", split})  # credentials go where this environment says
        click.echo(inspect_data(plan, split=split, n=count, boundaries=boundaries, color=color), color=color)


_REFUSED = (
    "its plan is not read: the checkpoint is not what its lineage record says",
    "restore it (`ftc lineage verify` names every difference)",
)
