"""A tiny preference set for task preference_tuning: small additions, the correct sum chosen over a wrong one; and
llmforge's DPO config as a job folder on a tiny Mistral.

Each pair is one conversation (the same user question) with two final answers, as llmforge's preference data holds
them; a tiny model can learn to prefer the right sum, so a DPO run's reward margin visibly rises.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from .models import TINY_SHAPE, build_tokenizer, write_jsonl

__all__ = [
    "CHOSEN",
    "LLMFORGE_DPO",
    "REJECTED",
    "build_tiny_mistral",
    "llmforge_dpo_job",
    "preference_pairs",
    "style_chats",
    "style_pairs",
    "token_pairs",
]

LLMFORGE = Path(__file__).resolve().parents[1] / "data" / "llmforge"
#: llmforge's DPO config for A10 GPUs (Mistral 7B Instruct v0.1, LoRA, ZeRO 3 from its own DeepSpeed file)
LLMFORGE_DPO = LLMFORGE / "configs/end-to-end-examples/fine-tune-preference/configs/dpo-training/mistral_a10.yaml"
MODEL_LINE = "model_id: mistralai/Mistral-7B-Instruct-v0.1\n"


def preference_pairs(n: int, seed: int = 0, system: str | None = None) -> list[dict[str, Any]]:
    """``n`` lines ``{"chosen": [...], "rejected": [...]}``: the user asks "What is 12 + 7?", the chosen answer is
    "19" and the rejected one a wrong sum (off by 1 to 9, never negative); ``system`` opens both conversations."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        wrong = a + b + rng.choice([d for d in range(-9, 10) if d and a + b + d >= 0])
        prompt = [{"role": "user", "content": f"What is {a} + {b}?"}]
        if system:
            prompt.insert(0, {"role": "system", "content": system})
        out.append(
            {
                "chosen": [*prompt, {"role": "assistant", "content": str(a + b)}],
                "rejected": [*prompt, {"role": "assistant", "content": str(wrong)}],
            }
        )
    return out


#: the answer style a preference set prefers, and the one it rejects, whatever the question (a tiny model can learn it)
CHOSEN, REJECTED = "Sure!", "No."


def _question(rng: random.Random) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"What is {rng.randint(0, 49)} + {rng.randint(0, 49)}?"}]


def style_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` preference pairs whose chosen answer is ``CHOSEN`` and rejected answer ``REJECTED``, to a question."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = _question(rng)
        answers = {"chosen": CHOSEN, "rejected": REJECTED}
        out.append({side: [*prompt, {"role": "assistant", "content": a}] for side, a in answers.items()})
    return out


def style_chats(n: int, seed: int = 0, chosen_share: float = 0.5) -> list[dict[str, Any]]:
    """``n`` chat examples answered ``CHOSEN`` (a ``chosen_share`` of them, every k-th) or else ``REJECTED``: an
    instruction-tuning set that teaches both styles, the chosen one less often."""
    rng = random.Random(seed)
    every = max(1, round(1 / chosen_share)) if chosen_share > 0 else n + 1
    return [
        {"messages": [*_question(rng), {"role": "assistant", "content": CHOSEN if i % every == 0 else REJECTED}]}
        for i in range(n)
    ]


def build_tiny_mistral(out_dir: str | Path, *, vocab_size: int = 512, seed: int = 0, **config: Any) -> Path:
    """A random Mistral-architecture model (the tiny models' shape: 2 layers of width 64, 4 query heads over 2
    key/value heads; ~0.5 MB) saved as safetensors, with the tiny tokenizer."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    settings = {**TINY_SHAPE, "vocab_size": vocab_size, **config}
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    MistralForCausalLM(MistralConfig(**settings)).save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer(out_dir, vocab_size=vocab_size, max_length=settings["max_position_embeddings"])
    return out_dir


def llmforge_dpo_job(folder: Path, *, replace: dict[str, str] | None = None, pairs: int = 32) -> Path:
    """Write llmforge's DPO config (``LLMFORGE_DPO``) into ``folder`` with its model swapped for a tiny Mistral
    (``weights/base``; 4096 positions, as the config's context_length asks), its DeepSpeed files beside it and
    ``pairs`` preference pairs as data/train.jsonl (and 4 as data/valid.jsonl); every other line as llmforge wrote it
    except the ``replace`` ones (old line text -> new). Returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = LLMFORGE_DPO.read_text()
    assert text.count(MODEL_LINE) == 1
    text = text.replace(MODEL_LINE, "model_id: ftc-tests/tiny-mistral\ninitial_base_model_ckpt_path: weights/base\n")
    for old, new in (replace or {}).items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    shutil.copytree(LLMFORGE / "deepspeed_configs", folder / "deepspeed_configs", dirs_exist_ok=True)
    if not (folder / "weights" / "base").exists():
        build_tiny_mistral(folder / "weights" / "base", max_position_embeddings=4096)
    write_jsonl(folder / "data" / "train.jsonl", preference_pairs(pairs, seed=1))
    write_jsonl(folder / "data" / "valid.jsonl", preference_pairs(4, seed=2))
    spec = folder / "job.yaml"
    spec.write_text(text)
    return spec


def token_pairs(n: int, *, seed: int, rejected: tuple[int, int] = (2, 6)) -> Any:
    """``n`` tokenized pairs (``Pairs``) without a tokenizer: a prompt of 3-6 random ids, then a chosen answer of 1-3
    ids and a rejected one of ``rejected`` (low, high: numpy's half-open range) ids, only the answers trained, so a
    batch of them is padded."""
    import numpy as np

    from ftc.runtime.training.preference import Pairs
    from ftc.runtime.training.tokens import Examples

    rng = np.random.default_rng(seed)
    chosen, other = [], []
    for _ in range(n):
        prompt = rng.integers(10, 100, size=int(rng.integers(3, 7)))
        for side, length in ((chosen, int(rng.integers(1, 4))), (other, int(rng.integers(*rejected)))):
            ids = np.concatenate([prompt, rng.integers(10, 100, size=length)]).astype(np.int32)
            side.append((ids, np.arange(len(ids)) >= len(prompt)))
    lines = list(range(1, n + 1))
    return Pairs(
        Examples([i for i, _ in chosen], [m for _, m in chosen], lines),
        Examples([i for i, _ in other], [m for _, m in other], lines),
    )
