"""The runtime: execute a compiled plan. Every entry point validates the plan and its inputs first."""

from ftc.spec.plan import read_plan as load_plan

from ._backend import run
from ._launch import run_plan

__all__ = ["load_plan", "run", "run_plan"]
