"""RoPE scaling: training (and serving) a model on more positions than it was pretrained with.

The settings are transformers' (``rope_type`` linear, dynamic, yarn or llama3, ``factor``, the original length and the
type's own knobs). A scaled model takes up to ``factor`` x its native length. The compiler resolves what the spec
leaves open (the factor of ``rope_type: linear`` alone, the native length, llama3's and yarn's defaults) against the
model's config.json, so the plan holds every value the run and an export's config.json use.

A model whose config.json already scales RoPE (Llama 3.1's llama3, a checkpoint of an earlier extension) keeps its
own unless the spec gives the same ``rope_type``: then the spec's replaces it, its factor counted from the model's
original length (a further stage of an extension). Another type is refused: mixing two scalings is not defined.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "SCALING_TECHNIQUE",
    "from_scaling_technique",
    "ROPE_TYPES",
    "RopeScaling",
    "factor_hint",
    "model_scaling",
    "native_length",
    "resolve_rope_scaling",
    "unfilled",
]

ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")

#: each type's own settings (None: not given) and what transformers takes when a config leaves them out; llama3 has
#: no defaults there, so Llama 3.1's published values are taken
_OWN = {
    "llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "yarn": {"beta_fast": 32.0, "beta_slow": 1.0},
}
#: the types that write the original length into their config (linear and dynamic read max_position_embeddings)
_WITH_ORIGINAL = ("yarn", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE scaling as the spec gives it (None: left for the compiler to fill from the model)."""

    rope_type: Literal["linear", "dynamic", "yarn", "llama3"]
    #: None: context_length / the native length (llmforge's ``embedding_scaling_technique: linear``)
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None

    @property
    def max_positions(self) -> int:
        """How many positions the scaled model takes (resolved scalings only)."""
        return int(self.factor * self.original_max_position_embeddings)

    def config_fields(self) -> dict[str, Any]:
        """The ``rope_parameters`` (transformers 5; ``rope_scaling`` before) this scaling puts in a config.json,
        without ``rope_theta`` (the model's own), and the ``max_position_embeddings`` to go with it: the scaled
        length, except for dynamic, which counts its scaling from max_position_embeddings (so that stays native)."""
        rope: dict[str, Any] = {"rope_type": self.rope_type, "factor": float(self.factor)}
        if self.rope_type in _WITH_ORIGINAL:
            rope["original_max_position_embeddings"] = self.original_max_position_embeddings
        for key in _OWN.get(self.rope_type, {}):
            rope[key] = float(getattr(self, key))
        native = self.original_max_position_embeddings
        return {"rope": rope, "max_position_embeddings": native if self.rope_type == "dynamic" else self.max_positions}

    def describe(self) -> str:
        """One line for people: ``linear x4 (512 -> 2048 positions)``."""
        own = [f"{k} {getattr(self, k):g}" for k in _OWN.get(self.rope_type, {}) if getattr(self, k) is not None]
        extra = f", {', '.join(own)}" if own else ""
        return (
            f"{self.rope_type} x{self.factor:g} ({self.original_max_position_embeddings} -> {self.max_positions} "
            f"positions{extra})"
        )


def unfilled(rope: Mapping[str, Any]) -> list[str]:
    """The settings of a resolved scaling (as a plan holds it) that are missing or not numbers: its factor, its
    original length and its type's own settings, which the compiler fills in."""
    needed = ["factor", "original_max_position_embeddings", *_OWN.get(rope.get("rope_type"), {})]
    return [k for k in needed if isinstance(rope.get(k), bool) or not isinstance(rope.get(k), (int, float))]


#: llmforge's key for context extension: ``none`` or ``linear`` (positional interpolation, its factor the context
#: length over the native length): an alias of rope_scaling
SCALING_TECHNIQUE = "embedding_scaling_technique"


def from_scaling_technique(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a spec as written) with llmforge's ``embedding_scaling_technique: linear`` as ``rope_scaling:
    {rope_type: linear}`` (the factor left for the compiler: context_length / the native length); ``none`` is no
    scaling. Given with rope_scaling as well, rope_scaling is kept (the compiler names the clash)."""
    out = {k: v for k, v in data.items() if k != SCALING_TECHNIQUE}
    if data.get(SCALING_TECHNIQUE) == "linear" and data.get("rope_scaling") is None:
        out["rope_scaling"] = {"rope_type": "linear"}
    return out


def model_scaling(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The RoPE scaling a config.json already has (``rope_scaling``, or transformers 5's ``rope_parameters``), or
    None for plain RoPE."""
    for key in ("rope_scaling", "rope_parameters"):
        found = config.get(key)
        if isinstance(found, Mapping):
            kind = found.get("rope_type", found.get("type", "default"))
            if kind not in (None, "default"):
                return {**found, "rope_type": kind}
    return None


def native_length(config: Mapping[str, Any]) -> int | None:
    """The length a model was pretrained at: its max_position_embeddings, or, when its config scales RoPE, the
    original length of that scaling."""
    limit = config.get("max_position_embeddings")
    own = model_scaling(config)
    if not isinstance(limit, int) or own is None:
        return limit if isinstance(limit, int) else None
    original = own.get("original_max_position_embeddings")
    if isinstance(original, int):
        return original
    factor = own.get("factor")
    if own["rope_type"] == "linear" and isinstance(factor, (int, float)) and factor >= 1:
        return int(round(limit / factor))
    return limit


def resolve_rope_scaling(
    rope: RopeScaling, config: Mapping[str, Any], context_length: int | None
) -> tuple[RopeScaling | None, list[tuple[tuple, str, str]]]:
    """``rope`` with every value filled from the model's ``config``, and the problems found, each (JSON path under
    rope_scaling, what, fix). The scaling is None when it cannot be resolved (then there are problems)."""
    problems: list[tuple[tuple, str, str]] = []
    own = model_scaling(config)
    if own is not None and own["rope_type"] != rope.rope_type:
        problems.append((
            ("rope_type",),
            f"the model's config.json already scales RoPE ({own['rope_type']}, factor {own.get('factor')}); a "
            f"{rope.rope_type} scaling on top of it is not defined",
            f"remove rope_scaling (the model takes up to max_position_embeddings = "
            f"{config.get('max_position_embeddings')} positions as it is), or give rope_type: {own['rope_type']} "
            "to replace its scaling with a larger factor",
        ))  # fmt: skip
    for key in sorted(
        {"low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow"} - set(_OWN.get(rope.rope_type, {}))
    ):
        if getattr(rope, key) is not None:
            owner = "llama3" if key.endswith("freq_factor") else "yarn"
            problems.append(((key,), f"{key} is a setting of rope_type {owner}, not {rope.rope_type}", f"remove {key}"))
    native = native_length(config)
    if not isinstance(native, int):
        problems.append(
            (
                ("rope_type",),
                "the model's config.json has no max_position_embeddings",
                "use weights whose config.json gives it",
            )
        )
    elif rope.original_max_position_embeddings not in (None, native):
        problems.append((
            ("original_max_position_embeddings",),
            f"{rope.original_max_position_embeddings} is not the model's native length ({native})",
            f"set it to {native}, or leave it out (it is filled in from the model)",
        ))  # fmt: skip
    factor = rope.factor
    if factor is None and isinstance(native, int):
        if context_length is None:
            problems.append(
                (("factor",), "no factor, and no context_length to derive it from", "give factor or context_length")
            )
        else:
            factor = max(1.0, context_length / native)
    if problems:
        return None, problems
    defaults = {
        k: getattr(rope, k) if getattr(rope, k) is not None else v for k, v in _OWN.get(rope.rope_type, {}).items()
    }
    resolved = dataclasses.replace(rope, factor=float(factor), original_max_position_embeddings=native, **defaults)
    return resolved, []


def factor_hint(context_length: int, native: int) -> str:
    """The smallest whole factor that takes ``context_length`` (for a fix line)."""
    return f"{max(2, math.ceil(context_length / native))}"
