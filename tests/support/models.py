"""Tiny, real models, tokenizers and chat data for tests and the examples' asset scripts (no downloads).

Needs the training stack (``pip install 'ftc[train]'``). Everything is seeded: the same call writes the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "PROMPT_FORMAT",
    "PROMPT_FORMATS",
    "arithmetic_examples",
    "build_tiny_gemma2",
    "build_tiny_mixtral",
    "build_tiny_model",
    "build_tokenizer",
    "reference_loss_sum",
    "write_jsonl",
]

#: The tiny tokenizer's chat template, and the same format as an ftc prompt_format.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PROMPT_FORMAT = {
    "system": "<|system|>\n{instruction}</s>\n",
    "user": "<|user|>\n{instruction}</s>\n",
    "assistant": "<|assistant|>\n{instruction}</s>\n",
    "trailing_assistant": "<|assistant|>\n",
    "bos": "<s>",
}
#: prompt formats (as spec fields) the exported chat template is checked with, token for token
PROMPT_FORMATS: dict[str, dict[str, Any]] = {
    "quickstart": PROMPT_FORMAT,
    "llama2-system-in-user": {
        "system": "<<SYS>>\n{instruction}\n<</SYS>>\n\n",
        "user": "[INST] {system}{instruction} [/INST]",
        "assistant": " {instruction} </s>",
        "trailing_assistant": " ",
        "bos": "<s>",
        "system_in_user": True,
        "default_system_message": "You are a careful assistant.",
    },
    # the seed guide's Llama Guard 2 mapping: the whole task prompt as the system message, the verdict as the answer
    "llama-guard-2": {
        "system": "[INST] Task: Check if there is unsafe content in '{{ role }}' messages.\n{instruction} [/INST]",
        "user": "{instruction}",
        "assistant": " {instruction}</s>",
        "bos": "<s>",
    },
    "keeps-whitespace-and-empty-system-tags": {
        **PROMPT_FORMAT,
        "add_system_tags_even_if_message_is_empty": True,
        "strip_whitespace": False,
    },
}
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def arithmetic_examples(n: int, seed: int = 0, system: str | None = None) -> list[dict[str, Any]]:
    """``n`` chat examples of small additions: learnable by a tiny model, so the loss visibly falls."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        messages = [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}"},
        ]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        out.append({"messages": messages})
    return out


def write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def build_tokenizer(
    out_dir: str | Path, vocab_size: int = 512, corpus: Iterable[str] | None = None, max_length: int = 512
):
    """Train a byte-level BPE tokenizer with the chat special tokens and template; save it to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if corpus is None:
        corpus = [json.dumps(e) for e in arithmetic_examples(2000, seed=1, system="You add numbers.")]
        corpus += [PROMPT_FORMAT[k] for k in ("system", "user", "assistant")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", chat_template=CHAT_TEMPLATE
    )
    fast.model_max_length = max_length
    fast.save_pretrained(out_dir)
    return fast


def reference_loss_sum(logits: Any, labels: Any) -> float:
    """The textbook loss to check the runtime's against: summed next-token cross-entropy of full logits over the
    tokens labelled in ``labels`` (-100: not)."""
    import torch.nn.functional as F

    logits = logits[:, :-1, :].float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    ).item()


#: the tiny models' shape (2 layers of width 64, 4 query heads over 2 key/value heads), whatever their family
TINY_SHAPE: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def build_tiny_model(
    out_dir: str | Path, *, vocab_size: int = 512, seed: int = 0, tokenizer: bool = True, **config: Any
) -> Path:
    """A random Llama-architecture model (~0.5 MB) saved as safetensors, with a tokenizer unless told not to."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {**TINY_SHAPE, "vocab_size": vocab_size, **config}
    torch.manual_seed(seed)
    return _save_tiny(out_dir, LlamaForCausalLM(LlamaConfig(**settings)), tokenizer, vocab_size)


def _save_tiny(out_dir: str | Path, model: Any, tokenizer: bool, vocab_size: int) -> Path:
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer:
        build_tokenizer(out_dir, vocab_size=vocab_size, max_length=model.config.max_position_embeddings)
    return out_dir


def build_tiny_mixtral(
    out_dir: str | Path, *, vocab_size: int = 512, seed: int = 0, tokenizer: bool = True, **config: Any
) -> Path:
    """A random Mixtral-architecture model (4 experts, 2 per token; ~1 MB) saved as safetensors, with a tokenizer
    unless told not to."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    settings = dict(
        TINY_SHAPE, vocab_size=vocab_size, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False
    )
    settings.update(config)
    torch.manual_seed(seed)
    return _save_tiny(out_dir, MixtralForCausalLM(MixtralConfig(**settings)), tokenizer, vocab_size)


def build_tiny_gemma2(
    out_dir: str | Path, *, vocab_size: int = 512, seed: int = 0, tokenizer: bool = True, **config: Any
) -> Path:
    """A random Gemma 2-architecture model (soft-capped attention and output logits, output layer tied to the
    embeddings, every other layer with a sliding window of 16 tokens; ~0.5 MB) saved as safetensors, with a
    tokenizer unless told not to."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    settings = dict(
        TINY_SHAPE,
        vocab_size=vocab_size,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        tie_word_embeddings=True,
    )
    settings.update(config)
    torch.manual_seed(seed)
    return _save_tiny(out_dir, Gemma2ForCausalLM(Gemma2Config(**settings)), tokenizer, vocab_size)
