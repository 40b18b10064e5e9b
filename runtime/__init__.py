"""The runtime: execute a compiled plan. Every entry point checks the plan and its inputs first."""

from typing import Any

from ._backend import run
from ._launch import Rendezvous, run_plan

__all__ = ["Rendezvous", "inspect_data", "run", "run_plan"]


def __getattr__(name: str) -> Any:
    # `ftc data inspect` needs numpy and a tokenizer; importing the runtime (`ftc run`'s launcher) needs neither
    if name == "inspect_data":
        from ._inspect import inspect_data

        return inspect_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
