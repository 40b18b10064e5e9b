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
    "FAMILY_FIELDS",
    "Architecture",
    "config_mismatches",
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
#: more fields that must agree, for the families whose architecture they change: Mixtral's experts (how many, how
#: many per token), Gemma 2's attention (head size, query scale, soft-capping of attention and output logits) and
#: its output layer tied to the embeddings. A weights folder of the family must state each (transformers writes them
#: all); only tie_word_embeddings may be left out, meaning the family's default.
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "mixtral": ("num_local_experts", "num_experts_per_tok"),
    "gemma2": (
        "head_dim",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "tie_word_embeddings",
    ),
}
#: what transformers reads for a tie_word_embeddings a config.json leaves out, by model_type
_TIED_BY_DEFAULT = {"gemma2": True}

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
    # transformers fuses each layer's experts into two 3-D weights (not linear layers): the router is the one here
    "mixtral": {"self_attn": _LLAMA_LIKE["self_attn"], "mlp": ("gate",)},
}


def _gated_mlp(hidden: int, inner: int, experts: int) -> dict[str, tuple[int, int]]:
    return {"mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden), "mlp.down_proj": (hidden, inner)}


def _experts_mlp(hidden: int, inner: int, experts: int) -> dict[str, tuple[int, int]]:
    """Mixtral's layer as saved (the published layout; transformers fuses the experts only once loaded)."""
    shapes = {"block_sparse_moe.gate": (experts, hidden)}
    for e in range(experts):
        shapes.update({
            f"block_sparse_moe.experts.{e}.w1": (inner, hidden),
            f"block_sparse_moe.experts.{e}.w2": (hidden, inner),
            f"block_sparse_moe.experts.{e}.w3": (inner, hidden),
        })  # fmt: skip
    return shapes


# the MLP weights a saved checkpoint holds per layer, by model_type (Gemma's first version has a different norm)
_SAVED_MLP = {t: _gated_mlp for t in ("llama", "mistral", "qwen2", "qwen3", "gemma2")} | {"mixtral": _experts_mlp}


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


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def config_mismatches(config: Mapping[str, Any], published: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where a weights folder's config.json disagrees with a published architecture: (field, what the folder says,
    as "field = value" or "no field"), for COMPARED_FIELDS that the folder states, and for the family's
    FAMILY_FIELDS when both are of that family."""
    found = [(f, f"{f} = {config[f]!r}") for f in COMPARED_FIELDS if f in config and config[f] != published.get(f)]
    model_type = published.get("model_type")
    if config.get("model_type", model_type) != model_type:
        return found
    for f in FAMILY_FIELDS.get(model_type, ()):
        if f not in published:
            continue
        if f not in config and f == "tie_word_embeddings":
            if _TIED_BY_DEFAULT.get(model_type, False) != published[f]:
                found.append((f, f"no {f} (so {_TIED_BY_DEFAULT.get(model_type, False)!r})"))
        elif f not in config:
            found.append((f, f"no {f}"))
        elif config[f] != published[f]:
            found.append((f, f"{f} = {config[f]!r}"))
    return found


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

    def adapted_as_parameters(self, targets: str | tuple[str, ...] | list[str]) -> list[str]:
        """The weights LoRA ``targets`` reach in modules that are not linear layers, which peft adapts as parameters
        (its ``target_parameters``, which take no dropout): Mixtral's router (``gate``), and with all-linear its
        experts, which transformers fuses into two 3-D weights a layer."""
        if self.model_type != "mixtral":
            return []
        if targets == "all-linear":
            return ["mlp.gate.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
        router = [n for n in self.module_names() or [] if n.endswith(".mlp.gate")]
        if isinstance(targets, str):
            reached = any(re.fullmatch(targets, n) for n in router) if _compiles(targets) else False
        else:
            reached = any(n == t or n.endswith("." + t) for n in router for t in targets)
        return ["mlp.gate.weight"] if reached else []

    def tensor_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The shape of every weight a checkpoint of this architecture holds, as transformers saves them, for Llama's
        layout and its kin (Mistral, Qwen 2, Gemma 2 with its extra norms, Mixtral with its experts); None for
        others."""
        c, model_type = self.config, self.model_type or ""
        if model_type not in _SAVED_MLP:
            return None
        try:
            hidden, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
            heads = int(c["num_attention_heads"])
            kv_heads = int(c.get("num_key_value_heads") or heads)
            head_dim = int(c.get("head_dim") or hidden // heads)
            inner = int(c["intermediate_size"])
            experts = int(c.get("num_local_experts") or 0)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
        if not c.get("tie_word_embeddings", _TIED_BY_DEFAULT.get(model_type, False)):
            shapes["lm_head.weight"] = (vocab, hidden)
        mlp = _SAVED_MLP[model_type](hidden, inner, experts)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if model_type == "gemma2":
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for i in range(layers):
            at = f"model.layers.{i}"
            shapes.update({
                f"{at}.self_attn.q_proj.weight": (heads * head_dim, hidden),
                f"{at}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                f"{at}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                f"{at}.self_attn.o_proj.weight": (hidden, heads * head_dim),
            })  # fmt: skip
            shapes.update({f"{at}.{name}.weight": shape for name, shape in mlp.items()})
            shapes.update({f"{at}.{norm}.weight": (hidden,) for norm in norms})
        return shapes

    def leaf_names(self) -> list[str]:
        """Short names of the targetable modules (q_proj, ...), for error messages."""
        names = self.module_names() or []
        return sorted({n.rsplit(".", 1)[-1] for n in names})
