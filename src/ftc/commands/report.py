"""``ftc report``: one self-contained HTML page of a checkpoint or a run."""

from __future__ import annotations

from pathlib import Path

import click

from ._notes import note


@click.command("report")
@click.argument("checkpoint", metavar="CHECKPOINT|RUN")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The HTML file to write.")
def report_command(checkpoint: str, output: Path) -> None:
    """One self-contained HTML page (no network) of CHECKPOINT (a run's best, else latest): the loss curves, the
    lineage graph with each ancestor's digest, data, eval loss and whether it verifies here, the pinned inputs, the
    settings and the environment. CHECKPOINT|RUN: a folder, or in a store a checkpoint a run published
    (s3://…/checkpoints/step-N/, gs://…) or the run's prefix (s3://bucket/run/: its best, else latest pointer),
    fetched with the run's metrics and checked against its marker first."""
    from ftc.errors import LineageBroken
    from ftc.lineage import in_store, local_checkpoint
    from ftc.lineage.outputs import check_output_outside
    from ftc.lineage.report import report_html
    from ftc.stores.atomic import write_text_atomic

    check_output_outside(output, reads=None if in_store(checkpoint) else Path(checkpoint))  # before any fetch
    with local_checkpoint(checkpoint, run_files=True, say=note) as found:
        try:
            page = report_html(found.folder, shown=found.shown)
        except ValueError as exc:
            raise LineageBroken(str(exc)) from None
    write_text_atomic(output, page)
    click.echo(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB)")
