"""A tiny preference set for task preference_tuning: small additions, the correct sum chosen over a wrong one.

Each pair is one conversation (the same user question) with two final answers, as llmforge's preference data holds
them; a tiny model can learn to prefer the right sum, so a DPO run's reward margin visibly rises.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["preference_pairs"]


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
