"""What ``model_id`` means: the architecture of well-known models, and the modules each family has.

The registry (architectures.json) holds each model's published config.json values. For bring-your-own weights the
checkpoint's config.json is compared field by field against it; for an unknown id the checkpoint's config.json is
the architecture.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "COMPARED_FIELDS",
    "Architecture",
    "known_architecture",
    "known_model_ids",
    "closest_model_ids",
]

#: config.json fields that must agree between model_id and bring-your-own weights.
COMPARED_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)

# Linear layers per decoder layer, by model_type; names as they appear in transformers' modules.
_LLAMA_LIKE = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
_LAYER_MODULES: dict[str, Mapping[str, tuple[str, ...]]] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "phi3": {"self_attn": ("qkv_proj", "o_proj"), "mlp": ("gate_up_proj", "down_proj")},
}


@functools.cache
def _registry() -> dict[str, dict[str, Any]]:
    text = (Path(__file__).parent / "architectures.json").read_text(encoding="utf-8")
    return json.loads(text)


def known_model_ids() -> list[str]:
    return sorted(_registry())


def known_architecture(model_id: str) -> dict[str, Any] | None:
    """The published config.json values of a well-known ``model_id``, or None."""
    config = _registry().get(model_id)
    return dict(config) if config is not None else None


def closest_model_ids(model_id: str, n: int = 3) -> list[str]:
    ids = known_model_ids()
    lowered = {i.lower(): i for i in ids}
    if model_id.lower() in lowered:
        return [lowered[model_id.lower()]]
    return difflib.get_close_matches(model_id, ids, n=n, cutoff=0.6)


@dataclass(frozen=True)
class Architecture:
    """The architecture a job trains: its config.json values and where they came from."""

    model_id: str
    config: Mapping[str, Any]
    #: "registry" (ftc's copy of the published config) or "checkpoint" (the weights' own config.json)
    source: str

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def max_position_embeddings(self) -> int | None:
        return self.config.get("max_position_embeddings")

    def module_names(self) -> list[str] | None:
        """Full names of the modules LoRA can target (linear layers, embeddings, lm_head), or None when ftc
        does not know this model_type's layout."""
        layout = _LAYER_MODULES.get(self.model_type or "")
        layers = self.config.get("num_hidden_layers")
        if layout is None or not isinstance(layers, int):
            return None
        names = ["model.embed_tokens", "lm_head"]
        for i in range(layers):
            for block, leaves in layout.items():
                names += [f"model.layers.{i}.{block}.{leaf}" for leaf in leaves]
        return names

    def unmatched_targets(self, targets: str | tuple[str, ...] | list[str]) -> list[str] | None:
        """The LoRA targets that match no module (peft's rules: a name matches itself or a dotted suffix; a single
        string is a regular expression over full names). None when the layout is unknown."""
        names = self.module_names()
        if names is None:
            return None
        if isinstance(targets, str):
            if targets == "all-linear":
                return []
            try:
                pattern = re.compile(targets)
            except re.error:
                return [targets]
            return [] if any(pattern.fullmatch(n) for n in names) else [targets]
        return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The shape of every weight a checkpoint of this architecture holds (transformers' names), for the model
        types whose layout ftc knows as Llama's; None for others."""
        c = self.config
        if _LAYER_MODULES.get(self.model_type or "") is not _LLAMA_LIKE or self.model_type in ("gemma", "gemma2"):
            return None
        try:
            hidden, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
            heads = int(c["num_attention_heads"])
            kv_heads = int(c.get("num_key_value_heads") or heads)
            head_dim = int(c.get("head_dim") or hidden // heads)
            inner = int(c["intermediate_size"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
        if not c.get("tie_word_embeddings", False):
            shapes["lm_head.weight"] = (vocab, hidden)
        for i in range(layers):
            at = f"model.layers.{i}"
            shapes.update({
                f"{at}.self_attn.q_proj.weight": (heads * head_dim, hidden),
                f"{at}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                f"{at}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                f"{at}.self_attn.o_proj.weight": (hidden, heads * head_dim),
                f"{at}.mlp.gate_proj.weight": (inner, hidden),
                f"{at}.mlp.up_proj.weight": (inner, hidden),
                f"{at}.mlp.down_proj.weight": (hidden, inner),
                f"{at}.input_layernorm.weight": (hidden,),
                f"{at}.post_attention_layernorm.weight": (hidden,),
            })  # fmt: skip
        return shapes

    def leaf_names(self) -> list[str]:
        """Short names of the targetable modules (q_proj, ...), for error messages."""
        names = self.module_names() or []
        return sorted({n.rsplit(".", 1)[-1] for n in names})
