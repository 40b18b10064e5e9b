"""``ftc export``: a checkpoint as a standalone Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path

import click

from ._notes import note


@click.command("export")
@click.argument("checkpoint")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The new export folder.")
@click.option(
    "--merge/--no-merge",
    default=None,
    help="Merge a LoRA adapter into the exact base weights it was trained on (default), or export the adapter.",
)
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard of a merge.")
def export_command(checkpoint: str, output: Path, merge: bool | None, max_shard_size: str) -> None:
    """Write CHECKPOINT as a standalone Hugging Face model folder: weights (an adapter merged into its base), the
    tokenizer with a chat template that renders the trained prompt format token for token, generation_config.json
    with the stop tokens, a model card and a lineage record that `ftc lineage verify` checks. CHECKPOINT: a folder
    (a run's: its best, else latest), or in a store a checkpoint a run published (s3://…/checkpoints/step-N/, gs://…)
    or the run's prefix (s3://bucket/run/: its best, else latest pointer), fetched and checked against its marker
    first."""
    from ftc.lineage import in_store, local_checkpoint
    from ftc.lineage.outputs import check_output_outside
    from ftc.serving.export import export_checkpoint

    check_output_outside(output, folder=True, reads=None if in_store(checkpoint) else Path(checkpoint))
    with local_checkpoint(checkpoint, say=note) as found:
        done = export_checkpoint(
            found.path, output, merge=merge, max_shard_size=max_shard_size, log=lambda m: click.echo(m, err=True)
        )
    how = "merged into its base" if done.merged else "as it is"
    click.echo(
        f"exported {how} to {done.folder} ({done.files} files, {done.size / 2**20:.1f} MiB, {done.dtype}); "
        f"lineage record {done.record_id}"
    )
