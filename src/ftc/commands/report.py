"""``ftc report``: one self-contained HTML page of a checkpoint or a run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("checkpoint", metavar="CHECKPOINT|RUN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The HTML file to write.")
def report_command(checkpoint: Path, output: Path) -> None:
    """One self-contained HTML page (no network) of CHECKPOINT (a run's best, else latest): the loss curves, the
    lineage graph with each ancestor's digest, data, eval loss and whether it verifies here, the pinned inputs, the
    settings and the environment."""
    from ftc.errors import LineageBroken
    from ftc.lineage import checkpoint_folder
    from ftc.lineage.outputs import check_output_outside
    from ftc.lineage.report import report_html
    from ftc.stores.atomic import write_text_atomic

    check_output_outside(output, reads=checkpoint)
    try:
        page = report_html(checkpoint_folder(checkpoint))
    except ValueError as exc:
        raise LineageBroken(str(exc)) from None
    write_text_atomic(output, page)
    click.echo(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB)")
