"""The runtime: execute a compiled plan. Every entry point checks the plan and its inputs first."""

from ._backend import run
from ._launch import run_plan

__all__ = ["run", "run_plan"]
