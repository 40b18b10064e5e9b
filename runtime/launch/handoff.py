"""What a launcher tells the processes it starts, said once: the options of ``python -m ftc.runtime PLAN``.

A launcher builds a worker's command line with ``to_args`` and the worker reads it back with ``from_args``: both
over one table of options, which ``ftc run`` (click) and the worker (argparse) each turn into their own parser.
Settings cross to a worker process, a container or a Ray worker here, never through environment variables.

This module imports nothing but the standard library (click only in :func:`rendezvous_options`): the CLI may use it
at start-up.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["Handoff", "Option", "Rendezvous", "rendezvous_options", "worker_parser"]


@dataclass(frozen=True)
class Option:
    """One command-line option: its flag, the field it fills, its type and bounds, and its help."""

    flag: str
    field: str
    kind: type = str
    help: str = ""
    low: int | None = None
    high: int | None = None
    hidden: bool = False  # ftc's own launchers give it; `--help` does not list it

    def parse(self, text: str) -> Any:
        """``text`` as this option's value (argparse's type): a number in its bounds, a path, or the text."""
        value = self.kind(text)
        if isinstance(value, int) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise argparse.ArgumentTypeError(f"{value} is not in the range {self._range()}")
        return value

    def _range(self) -> str:
        if self.high is None:
            return f"x>={self.low}"
        return f"{self.low}<=x<={self.high}"


@dataclass(frozen=True)
class Rendezvous:
    """This machine's place in a multi-node plan: its node rank and where node 0 waits for the others (a one-node
    plan ignores it)."""

    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    #: ``ftc run``'s options and the worker's, the same
    OPTIONS = (
        Option("--node-rank", "node_rank", int, "This machine's rank in a multi-node plan.", low=0),
        Option("--master-addr", "master_addr", str, "Address of node 0 (multi-node plans)."),
        Option("--master-port", "master_port", int, "Port on node 0 for the rendezvous.", low=1, high=65535),
    )

    def to_args(self) -> list[str]:
        """The same, as command-line options."""
        return _to_args(self, self.OPTIONS)

    @classmethod
    def from_args(cls, values: Mapping[str, Any] | argparse.Namespace) -> Rendezvous:
        """From parsed options (argparse's namespace, or click's keyword arguments)."""
        return cls(**_from_args(cls, values, cls.OPTIONS))


@dataclass(frozen=True)
class Handoff:
    """What a launcher hands the worker processes it starts, beside the plan and the rendezvous: how to run and where
    to report how it ended."""

    #: continue from the newest checkpoint
    resume: bool = False
    #: where the plan's inputs and output are for this run (JSON the launcher wrote; ``ftc reproduce``, Ray)
    placement: Path | None = None
    #: where to leave the outcome note when the run fails (``outcome.write_outcome``)
    outcome: Path | None = None
    #: the launcher has checked every remote input against its store and put it in the cache: read it from there
    #: (a container gets no store credentials)
    inputs_checked: bool = False
    #: the launcher found the spec's tracker unreachable, and the spec says to train without it
    tracker_off: bool = False
    #: the container this runs in (named by the docker backend), for the output lock's refusal message
    container: str | None = None

    OPTIONS = (
        Option("--resume", "resume", bool, "Continue from the newest checkpoint in the plan's output folder."),
        Option("--placement", "placement", Path, hidden=True),
        Option("--outcome", "outcome", Path, hidden=True),
        Option("--inputs-checked", "inputs_checked", bool, hidden=True),
        Option("--tracker-off", "tracker_off", bool, hidden=True),
        Option("--container", "container", str, hidden=True),
    )

    def to_args(self) -> list[str]:
        """The options a worker needs to be told (those that differ from the defaults)."""
        return _to_args(self, self.OPTIONS)

    @classmethod
    def from_args(cls, values: Mapping[str, Any] | argparse.Namespace) -> Handoff:
        return cls(**_from_args(cls, values, cls.OPTIONS))


def _to_args(value: Any, options: tuple[Option, ...]) -> list[str]:
    default = type(value)()
    args: list[str] = []
    for option in options:
        given = getattr(value, option.field)
        if option.kind is bool:
            args += [option.flag] if given else []
        elif given is not None and (given != getattr(default, option.field) or option.hidden is False):
            args += [option.flag, str(given)]
    return args


def _from_args(cls: type, values: Mapping[str, Any] | argparse.Namespace, options: tuple[Option, ...]) -> dict:
    values = vars(values) if isinstance(values, argparse.Namespace) else values
    defaults = {f.name: f.default for f in fields(cls)}
    return {o.field: values.get(o.field, defaults[o.field]) for o in options}


def worker_parser() -> argparse.ArgumentParser:
    """``python -m ftc.runtime PLAN [options]``: the parser of a worker's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m ftc.runtime", description="Run one process of a compiled ftc plan."
    )
    parser.add_argument("plan", type=Path)
    defaults = {**vars(Rendezvous()), **vars(Handoff())}
    for option in (*Rendezvous.OPTIONS, *Handoff.OPTIONS):
        shown = argparse.SUPPRESS if option.hidden else option.help
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.field, action="store_true", help=shown)
        else:
            parser.add_argument(
                option.flag, dest=option.field, type=option.parse, default=defaults[option.field], help=shown
            )
    return parser


def rendezvous_options(command: Callable) -> Callable:
    """Click's options of :class:`Rendezvous` (``--node-rank``, ``--master-addr``, ``--master-port``, with their
    defaults shown) on ``command``, which gets them as one ``rendezvous`` argument."""
    import click

    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        given = {o.field: kwargs.pop(o.field) for o in Rendezvous.OPTIONS}
        return command(*args, rendezvous=Rendezvous.from_args(given), **kwargs)

    default = Rendezvous()
    for option in reversed(Rendezvous.OPTIONS):
        kind = click.IntRange(option.low, option.high) if option.kind is int else option.kind
        wrapped = click.option(
            option.flag, type=kind, default=getattr(default, option.field), show_default=True, help=option.help
        )(wrapped)
    return wrapped
