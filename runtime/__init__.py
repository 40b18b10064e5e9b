"""The runtime: execute a compiled plan. Every entry point checks the plan and its inputs first.

``chat_template`` and ``generation`` are public modules: the prompt format as serving reads it, and generation as
serving does it (used by ``ftc.serving`` and by a run's own evaluation)."""

from typing import Any

from ._backend import run
from ._launch import Rendezvous, run_plan

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

#: loaders that never run code from a weights folder (runtime/_model.py), and the tokenizer saver
_LOADERS = (
    "pretrained_adapter",
    "pretrained_causal_lm",
    "pretrained_config",
    "pretrained_tokenizer",
    "refuse_code_in_inputs",
    "save_tokenizer",
)


def __getattr__(name: str) -> Any:
    # `ftc data inspect` needs numpy and a tokenizer; importing the runtime (`ftc run`'s launcher) needs neither
    if name == "inspect_data":
        from ._inspect import inspect_data

        return inspect_data
    if name in _LOADERS:  # a checkpoint's and an export's tokenizer, saved the same way; weights loaded one way
        from . import _model

        return getattr(_model, name)
    if name == "verify_inputs":
        from ._inputs import verify_inputs

        return verify_inputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
