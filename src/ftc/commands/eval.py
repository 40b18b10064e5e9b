"""``ftc eval``: exact match of a checkpoint's or an export's answers against a data file's."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._sampling import sampling, sampling_options


@click.command("eval")
@click.argument("model", metavar="CHECKPOINT|EXPORT", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Chat-JSONL examples with answers.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Per-example outputs (JSONL). Default: <data>.eval.jsonl"
)
@sampling_options
def eval_command(model: Path, data: Path, output: Path | None, **options) -> None:
    """Answer every example of --data in place of its last assistant turn and score exact match (whitespace
    normalized): per-example outputs to --output, the aggregate as JSON on stdout."""
    from ftc.lineage.outputs import check_output_outside
    from ftc.serving.generate import evaluate, open_session

    out = output or data.with_name(data.stem + ".eval.jsonl")
    check_output_outside(out, reads=model, also=data)
    chosen, dtype = sampling(options)
    session = open_session(model, dtype=dtype)
    result = evaluate(session, data, out, sampling=chosen)
    click.echo(json.dumps(result, indent=2))
