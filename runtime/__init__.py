"""The runtime: execute a compiled plan. Every entry point checks the plan and its inputs first."""

from ._backend import run
from ._inspect import inspect_data
from ._launch import Rendezvous, run_plan

__all__ = ["Rendezvous", "inspect_data", "run", "run_plan"]
