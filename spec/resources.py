"""Ray resources as people read them: ``{memory: 53687091200, accelerator_type:A10G: 0.001}``.

A spec's ``worker_resources`` / ``trainer_resources`` name Ray resources (a name -> a non-negative finite amount).
The names are the spec's text, shown in logs, ``plan show`` and compile notes, so they are escaped for a terminal; a
whole amount is written without a fraction (bytes of memory stay readable, never ``5.36871e+10``)."""

from __future__ import annotations

from collections.abc import Mapping

from .text import for_terminal

__all__ = ["amount_text", "describe_resources"]


def amount_text(value: float) -> str:
    """``53687091200`` for a whole amount, ``0.001`` for a fraction."""
    return str(int(value)) if float(value).is_integer() else f"{float(value):g}"


def describe_resources(resources: Mapping[str, float], *, braces: bool = True) -> str:
    """``{name: amount, ...}`` (``name amount, ...`` without ``braces``), names escaped for a terminal."""
    if braces:
        return "{" + ", ".join(f"{for_terminal(name)}: {amount_text(v)}" for name, v in resources.items()) + "}"
    return ", ".join(f"{for_terminal(name)} {amount_text(v)}" for name, v in resources.items())
