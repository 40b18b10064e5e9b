"""``ftc reproduce``: rerun a checkpoint's own plan and compare every file."""

from __future__ import annotations

from pathlib import Path

import click

from ._notes import note


@click.command("reproduce")
@click.argument("checkpoint")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="A new folder for the rerun.")
@click.option(
    "--rtol", type=click.FloatRange(min=0), default=1e-2, show_default=True,
    help="Relative tolerance per tensor for 'numerically reproduced': |a - b| <= atol + rtol * max|a|.",
)  # fmt: skip
@click.option("--atol", type=click.FloatRange(min=0), default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option(
    "--logger", "tracker", type=click.Choice(["off", "mlflow", "wandb", "tensorboard"]), default="off",
    show_default=True,
    help="Feed this tracker, set up from the environment alone (MLFLOW_TRACKING_URI, WANDB_*; TensorBoard: OUTPUT/"
    "tensorboard). The checkpoint's own logger is never used: its plan is outside input.",
)  # fmt: skip
def reproduce_command(checkpoint: str, output: Path, rtol: float, atol: float, tracker: str) -> None:
    """Rerun CHECKPOINT's own plan from its pinned inputs into OUTPUT and compare every file: bitwise reproduced,
    numerically reproduced (within the tolerance), or not reproduced (exit 16, with the likely causes). The rerun
    writes only into OUTPUT (and ftc's cache) and reports to no tracker unless --logger names one. CHECKPOINT: a
    folder (a run's: its best, else latest), or in a store a checkpoint a run published (s3://…/checkpoints/step-N/,
    gs://…) or the run's prefix (s3://bucket/run/: its best, else latest pointer), fetched and checked against its
    marker first."""
    from ftc.errors import NotReproduced
    from ftc.lineage import local_checkpoint
    from ftc.runtime.launch.reproduce import REPORT_FILE, check_options, reproduce

    check_options(output, rtol=rtol, atol=atol)  # before a checkpoint is fetched
    with local_checkpoint(checkpoint, say=note) as checked:
        # fetched from a store: named by its URI, not the copy removed below
        named = (lambda text: text.replace(str(checked.folder.resolve()), checked.shown)) if checked.digests else str
        try:
            found = reproduce(checked.path, output, rtol=rtol, atol=atol, tracker=tracker, given=checkpoint)
        except NotReproduced as exc:
            exc.args = (named(str(exc)),)
            raise
        text = named(found.text())
    click.echo(text)
    click.echo(f"report: {output / REPORT_FILE}")
