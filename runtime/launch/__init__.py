"""The launch layer: how a plan is started and watched. It checks the plan and its inputs, takes the output
folder's lock, then runs the plan's recipe here (``local``: this interpreter, or torch.distributed.run's processes),
in the plan's image (``docker``) or on a Ray cluster (``ray``); it uploads checkpoints to a store (``publish``) and
reruns a checkpoint's plan (``reproduce``). What a launcher tells the processes it starts is said once
(``handoff``: their command-line options), and so is how they report how they ended (``outcome``). It imports the
recipes and the training library; they never import it.

Importing this package loads none of its modules: each name below is imported when first asked for (the CLI reads
the rendezvous options from ``handoff`` at start-up without loading a launcher).
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> the module that holds it
_HOME = {
    "Handoff": "handoff",
    "Rendezvous": "handoff",
    "rendezvous_options": "handoff",
    "choose_backend": "_backend",
    "run": "_backend",
    "run_plan": "local",
    "worker_main": "local",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
