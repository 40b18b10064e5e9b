"""The ``ftc`` command: the group, its global options, a table of verbs, and ``main``, which turns errors into exit
codes through :func:`ftc.errors.report`.

Each verb lives in its own module under :mod:`ftc.commands`, a few lines over a library function. :data:`COMMANDS`
names the modules; a verb's module is imported only when that verb runs (as pip's command table does), so
``ftc --help`` lists every verb from the table alone, and no verb but ``run`` imports the training stack.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

import click

import ftc
from ftc.errors import ExitCode, FtcError, report

__all__ = ["COMMANDS", "cli", "main"]


class Verb(NamedTuple):
    """Where a verb is defined, and what ``ftc --help`` says of it without importing it."""

    module: str
    attribute: str
    summary: str  # the first sentence of the verb's help (tests/unit/test_cli.py keeps the two the same)


#: every verb of ``ftc``: name -> where its click command is, and its summary
COMMANDS: dict[str, Verb] = {
    "compile": Verb(
        "ftc.commands.compile",
        "compile_command",
        "Validate SPEC, pin every input by content and the image by digest, and write a deterministic run plan.",
    ),
    "data": Verb("ftc.commands.data", "data_group", "Look at training data as a run will see it."),
    "eval": Verb(
        "ftc.commands.eval",
        "eval_command",
        "Answer every example of --data in place of its last assistant turn and score exact match (whitespace "
        "normalized): per-example outputs to --output, the aggregate as JSON on stdout.",
    ),
    "export": Verb(
        "ftc.commands.export",
        "export_command",
        "Write CHECKPOINT as a standalone Hugging Face model folder: weights (an adapter merged into its base), the "
        "tokenizer with a chat template that renders the trained prompt format token for token, "
        "generation_config.json with the stop tokens, a model card and a lineage record that `ftc lineage verify` "
        "checks.",
    ),
    "generate": Verb(
        "ftc.commands.generate",
        "generate_command",
        "Answer with MODEL (a checkpoint: its adapter on the exact base it was trained on; or an export), prompted "
        "in the trained format, stopping at its stop text; the answer is streamed as it is generated.",
    ),
    "image": Verb("ftc.commands.image", "image_group", "Build the runtime images (from a checkout of ftc)."),
    "lineage": Verb(
        "ftc.commands.lineage",
        "lineage_group",
        "Show, verify and export where a checkpoint came from (its lineage.json).",
    ),
    "plan": Verb("ftc.commands.plan", "plan_group", "Inspect compiled plans."),
    "report": Verb(
        "ftc.commands.report",
        "report_command",
        "One self-contained HTML page (no network) of CHECKPOINT (a run's best, else latest): the loss curves, the "
        "lineage graph with each ancestor's digest, data, eval loss and whether it verifies here, the pinned "
        "inputs, the settings and the environment.",
    ),
    "reproduce": Verb(
        "ftc.commands.reproduce",
        "reproduce_command",
        "Rerun CHECKPOINT's own plan from its pinned inputs into OUTPUT and compare every file: bitwise reproduced, "
        "numerically reproduced (within the tolerance), or not reproduced (exit 16, with the likely causes).",
    ),
    "run": Verb(
        "ftc.commands.run",
        "run_command",
        "Train: validate PLAN, check every input against its pinned digest, then run it (DeepSpeed).",
    ),
    "schema": Verb("ftc.commands.schema", "schema_command", "Print the job spec's JSON Schema (draft 2020-12)."),
}


class _LazyGroup(click.Group):
    """A group whose verbs are :data:`COMMANDS`: a verb's module is imported when it is looked up, and the help lists
    the table's summaries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        verb = COMMANDS.get(cmd_name)
        return None if verb is None else getattr(importlib.import_module(verb.module), verb.attribute)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:  # "Did you mean ...": click (8.4 on) looks for close names among its own
            if not hasattr(exc, "command_name"):
                raise
            raise type(exc)(exc.command_name, possibilities=COMMANDS, ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # as click lays them out, each summary shortened to the room left, from a stand-in that imports nothing
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit)) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


_EXIT_CODES_HELP = "\b\nExit codes: " + ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}" for c in ExitCode)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=_EXIT_CODES_HELP,
)
@click.option("--debug", is_flag=True, help="Show a traceback with errors.")
@click.version_option(ftc.__version__, prog_name="ftc")
def cli(debug: bool) -> None:
    """ftc: compile a fine-tuning job spec into a pinned run plan, and run it.

    \b
      ftc compile job.yaml -o plan.json    validate the spec, pin every input, write the plan
      ftc run plan.json                    train: full-parameter or LoRA, with DeepSpeed
      ftc plan show plan.json              what the plan will do
      ftc plan diff a.json b.json          what differs between two plans
      ftc data inspect job.yaml            the training data as a run sees it, trained tokens marked
      ftc export runs/x/best -o model/     a standalone Hugging Face model folder (adapter merged)
      ftc generate model/ --prompt "..."   answer in the trained format (a checkpoint or an export)
      ftc eval model/ --data test.jsonl    exact match on a data file's answers, or a classifier's metrics
      ftc report runs/x -o report.html     one HTML page: loss curves, lineage graph, inputs, environment
      ftc schema                           the job spec's JSON Schema
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every error into its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="ftc", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not at the interpreter's exit
        return int(result) if isinstance(result, int) else ExitCode.OK
    except BrokenPipeError:
        return _reader_went_away()
    except SystemExit:  # click ends a command whose stdout was closed with exit 1, after pacifying its streams
        if _stdout_closed():
            return _reader_went_away()
        raise
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # click's name for Ctrl-C
        return report(KeyboardInterrupt(), debug=debug)
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, FtcError) and len(exc.args) == 1:  # messages quote outside text (records, plans, data)
            from ftc.spec.text import for_terminal

            exc.args = (for_terminal(str(exc), newlines=True),)  # shown with its control characters escaped
        return report(exc, debug=debug)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has closed it (the kernel flags the write end with an error)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _reader_went_away() -> int:
    """The reader of stdout closed it (``ftc schema | head -1``): not an error, as for any Unix filter. What is
    still buffered goes nowhere, so that the interpreter's last flush does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.OK


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
