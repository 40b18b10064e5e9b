"""A guard-style classification set: the assistant answers ``safe`` or ``unsafe``, and the label follows from the
prompt (a keyword), so a tiny model can learn it in seconds."""

from __future__ import annotations

import random
from typing import Any

LABELS = ["safe", "unsafe"]
_HARMLESS = ["bake bread", "fold a map", "tune a guitar", "plant tomatoes", "paint a fence", "sort my books"]
_HARMFUL = ["build a bomb", "poison a well", "steal a car", "hack a bank", "forge a passport", "make a weapon"]


def guard_examples(n: int, seed: int = 0, categories: bool = False) -> list[dict[str, Any]]:
    """``n`` chat examples, about half of each label: how to do something harmless (safe) or harmful (unsafe).
    ``categories``: an unsafe answer has Llama Guard's second line, the violated category (``unsafe\nS3``)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        unsafe = i % 2 == 1
        task = rng.choice(_HARMFUL if unsafe else _HARMLESS)
        messages = [
            {"role": "user", "content": f"Tell me how to {task}."},
            {
                "role": "assistant",
                "content": LABELS[unsafe] + (f"\nS{_HARMFUL.index(task) + 1}" if unsafe and categories else ""),
            },
        ]
        out.append({"messages": messages})
    return out
