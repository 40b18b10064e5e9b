"""``ftc eval``: a checkpoint's or an export's answers scored against a data file's: exact match, or a
classifier's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._sampling import _FiniteFloat, sampling, sampling_options


@click.command("eval")
@click.argument("model", metavar="CHECKPOINT|EXPORT", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Chat-JSONL examples with answers.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Per-example outputs (JSONL). Default: <data>.eval.jsonl"
)
@click.option(
    "--threshold",
    type=_FiniteFloat(min=0, max=1, min_open=True, max_open=True),
    help="A classifier of two labels: predict the second where its probability is at least this (default: the "
    "most probable label).",
)
@sampling_options
def eval_command(model: Path, data: Path, output: Path | None, threshold: float | None, **options) -> None:
    """Answer every example of --data in place of its last assistant turn and score exact match (whitespace
    normalized): per-example outputs to --output, the aggregate as JSON on stdout. A classifier generates nothing:
    each label's probability at the answer, from one forward pass, is scored against the final answer's first line
    (accuracy, precision, recall, F1 and PR-AUC per class and macro, the confusion matrix); a category line after
    the label (unsafe, then S1,S3) is generated after the true label and scored by exact match."""
    from ftc.lineage.outputs import check_output_outside
    from ftc.serving.classify import check_threshold, score_classifier
    from ftc.serving.generate import evaluate, load_session
    from ftc.serving.trained import open_trained

    out = output or data.with_name(data.stem + ".eval.jsonl")
    check_output_outside(out, reads=model, also=data)
    chosen, dtype = sampling(options)
    trained = open_trained(model)
    check_threshold(trained, threshold)  # before the model is loaded
    session = load_session(trained, dtype=dtype)
    if trained.labels is not None:
        result = score_classifier(session, data, out, threshold=threshold, sampling=chosen)
    else:
        result = evaluate(session, data, out, sampling=chosen)
    click.echo(json.dumps(result, indent=2))
