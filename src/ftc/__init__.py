"""ftc: a fine-tuning compiler for open-weight LLMs.

The path from a job spec to a checkpoint reads top to bottom:

    spec file --load_spec--> JobSpec --resolve_inputs--> inputs --build_plan--> plan.json --execute_plan--> checkpoint

``ftc.spec`` holds the schemas and the typed spec, ``ftc.compiler`` turns a spec into a plan, ``ftc.runtime``
executes a plan, and ``ftc.cli`` is a thin command line over those functions.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
