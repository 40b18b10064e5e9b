"""``ftc generate``: answer prompts with a checkpoint or an export, streamed, in the trained format."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._notes import note
from ._sampling import sampling, sampling_options


@click.command("generate")
@click.argument("model", metavar="CHECKPOINT|EXPORT")
@click.option("--prompt", help="One user turn to answer.")
@click.option("--system", help="With --prompt: a system message before it.")
@click.option(
    "--messages",
    "messages_file",
    type=click.Path(path_type=Path),
    help="A chat-JSONL file: answer each conversation (a last assistant turn, if any, is replaced); one JSON line "
    'per conversation: {"line", "answer", "finish_reason"} (a classifier: {"line", "label", "probability", '
    '"probabilities"}).',
)
@sampling_options
def generate_command(model: str, prompt: str | None, system: str | None, messages_file: Path | None, **options) -> None:
    """Answer with MODEL (a checkpoint: its adapter on the exact base it was trained on; or an export), prompted
    in the trained format, stopping at its stop text; the answer is streamed as it is generated. A classifier
    answers with its most probable label and that label's probability, `unsafe (p=0.93)`, nothing generated.
    A checkpoint in a store (s3://…/checkpoints/step-N/, gs://…; or a run's prefix, s3://bucket/run/: its best, else
    latest pointer) is fetched and checked against its marker first."""
    from ftc.errors import UsageError
    from ftc.lineage import local_checkpoint
    from ftc.serving.generate import conversations_to_answer, open_session

    if (prompt is None) == (messages_file is None):
        raise UsageError("give --prompt TEXT or --messages FILE.jsonl (one of them)")
    if prompt is not None:
        turns = [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]
        chats = [("--prompt", turns)]
    else:
        chats = conversations_to_answer(messages_file)
    chosen, dtype = sampling(options)
    with local_checkpoint(model, say=note) as found:
        _answer(open_session(found.path, dtype=dtype), chats, chosen)


def _answer(session, chats, chosen) -> None:
    """Each conversation answered by ``session``: --prompt's streamed as text (a classifier's verdict as one line),
    --messages' as one JSON line each, whatever the answers hold (text spanning lines stays one line)."""
    prompts = [session.prompt(messages, where) for where, messages in chats]  # all checked before any answer
    classifier = session.trained.labels is not None
    if classifier:
        from ftc.serving.classify import classify
    for (where, _), ids in zip(chats, prompts):
        if where == "--prompt":
            if classifier:
                click.echo(classify(session, ids).text())
                continue
            result = session.generate(ids, chosen, on_text=lambda text: click.echo(text, nl=False))
            click.echo()
            if result.finish_reason == "length":
                click.echo(f"(stopped at --max-new-tokens {chosen.max_new_tokens})", err=True)
            continue
        line = int(where.rsplit(":", 1)[1])
        if classifier:
            verdict = classify(session, ids)
            row = {"line": line, "label": verdict.label, "probability": verdict.probability}
            row["probabilities"] = verdict.probabilities
        else:
            result = session.generate(ids, chosen)
            row = {"line": line, "answer": result.text, "finish_reason": result.finish_reason}
        click.echo(json.dumps(row, ensure_ascii=True))  # escaped: nothing of the model's text reaches the terminal raw
