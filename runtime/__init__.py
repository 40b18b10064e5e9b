"""The runtime: execute a compiled plan. Two rooms and the recipes between them:

- ``ftc.runtime.training``: the training library (rendering, tokens and masks, batches, losses, model loading,
  checkpoints, generation, the chat template), public names in its ``__all__``;
- ``ftc.runtime.recipes``: the training recipes over it (``sft``), each one file;
- ``ftc.runtime.launch``: starting a plan's recipe (local processes, a container, a Ray cluster), the output lock,
  publishing and ``ftc reproduce``.

Training never imports the launch layer, and importing this package imports neither: the names below are the
runtime's entry points as before (``from ftc.runtime import run``), each imported when first asked for.
``python -m ftc.runtime PLAN`` runs one process of a plan (``launch.local.worker_main``)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "Rendezvous",
    "inspect_data",
    "pretrained_adapter",
    "pretrained_causal_lm",
    "pretrained_config",
    "pretrained_tokenizer",
    "refuse_code_in_inputs",
    "run",
    "run_plan",
    "save_tokenizer",
    "verify_inputs",
]

_LAUNCH = ("Rendezvous", "run", "run_plan")


def __getattr__(name: str) -> Any:
    # the launcher (and its publisher, its engines) loads only for a caller that starts a plan
    if name in _LAUNCH:
        from . import launch

        return getattr(launch, name)
    if name in __all__:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
