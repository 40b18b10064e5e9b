"""The runtime: execute a compiled plan. Every entry point validates the plan first (``load_plan``)."""

from ftc.spec.plan import read_plan as load_plan

__all__ = ["load_plan"]
