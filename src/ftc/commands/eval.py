"""``ftc eval``: a checkpoint's or an export's answers scored against a data file's: exact match, or a
classifier's metrics; with ``--spec``, plain base weights scored as that spec says."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import click
from click.core import ParameterSource

from ._notes import note
from ._sampling import _FiniteFloat, sampling, sampling_options


@click.command("eval")
@click.argument("model", metavar="CHECKPOINT|EXPORT|WEIGHTS")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Chat-JSONL examples with answers.")
@click.option(
    "--spec",
    type=click.Path(path_type=Path),
    help="Score plain weights (a base model's folder, no lineage.json) as this job spec says: its prompt format and "
    "stops, its task and labels, its evaluation.max_new_tokens unless --max-new-tokens is given; the score a run of "
    "it from these weights gives before training.",
)
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
def eval_command(
    model: str, data: Path, spec: Path | None, output: Path | None, threshold: float | None, **options
) -> None:
    """Answer every example of --data in place of its last assistant turn and score exact match (whitespace
    normalized): per-example outputs to --output, the aggregate as JSON on stdout. A classifier generates nothing:
    each label's probability at the answer, from one forward pass, is scored against the final answer's first line
    (accuracy, precision, recall, F1 and PR-AUC per class and macro, the confusion matrix); a category line after
    the label (unsafe, then S1,S3) is generated after the true label and scored by exact match. Plain weights
    (a base, no lineage.json) are scored with --spec: the baseline a fine-tune of them is measured against.
    Progress goes to stderr."""
    from ftc.lineage import in_store, local_checkpoint
    from ftc.lineage.outputs import check_output_outside
    from ftc.serving.classify import check_threshold, score_classifier
    from ftc.serving.generate import evaluate, load_session
    from ftc.serving.plain_weights import check_scored_output, open_scored

    default = output or data.with_name(data.stem + ".eval.jsonl")
    if in_store(model):  # a published checkpoint or run prefix: fetched and checked against its marker first
        out = check_output_outside(default, also=data)
        opened = local_checkpoint(model, say=note)
    else:
        out = check_scored_output(default, Path(model), spec=spec, data=data)
        opened = contextlib.nullcontext()
    chosen, dtype = sampling(options)
    with opened as found:
        trained = open_scored(found.folder if found is not None else Path(model), spec)
        if trained.plain is not None and _default("max_new_tokens"):  # as long as the run's evaluation answers
            chosen = dataclasses.replace(chosen, max_new_tokens=trained.plain.spec.evaluation.max_new_tokens)
        check_threshold(trained, threshold)  # before the model is loaded
        session = load_session(trained, dtype=dtype)
        if trained.labels is not None:
            result = score_classifier(session, data, out, threshold=threshold, sampling=chosen)
        else:
            result = evaluate(session, data, out, sampling=chosen)
        if found is not None:  # fetched from a store: named by its URI, not the copy removed below
            result["model"] = found.shown
    click.echo(json.dumps(result, indent=2))


def _default(option: str) -> bool:
    """Whether ``option`` was left at its default (not given on the command line)."""
    return click.get_current_context().get_parameter_source(option) is ParameterSource.DEFAULT
