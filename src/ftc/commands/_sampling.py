"""The sampling options ``ftc generate`` and ``ftc eval`` share, and the settings they make."""

from __future__ import annotations

import math
from typing import Any

import click


class _FiniteFloat(click.FloatRange):
    """A FloatRange that is also finite: nan passes every comparison of a range check, and inf is no setting."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def sampling_options(command):
    """--max-new-tokens, --temperature, --top-p, --seed and --dtype, shared by generate and eval."""
    options = [
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True),
        click.option(
            "--temperature", type=_FiniteFloat(min=0), default=0.0, show_default=True, help="0: greedy."
        ),
        click.option("--top-p", type=_FiniteFloat(min=0, max=1, min_open=True), default=1.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Of sampling (temperature > 0)."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Default: float32 on "
                     "a CPU, bfloat16 on a GPU."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def sampling(options: dict[str, Any]) -> tuple[Any, str | None]:
    """The :class:`~ftc.runtime.training.generation.Sampling` and the dtype the options of :func:`sampling_options`
    ask for."""
    from ftc.runtime.training.generation import Sampling

    chosen = Sampling(options["max_new_tokens"], options["temperature"], options["top_p"], options["seed"])
    return chosen, options["dtype"]
