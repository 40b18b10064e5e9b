"""Regenerate this example's tiny model and guard data (they are committed; run this only to change them).

    python examples/guard-classifier/make_assets.py

Writes model/ (a random 2-layer Llama, ~0.5 MB of safetensors, with a 512-token BPE tokenizer trained on the guard
prompts) and data/: two training halves (stage 1 trains on train_1.jsonl, stage 2 continues on train_2.jsonl) and
valid.jsonl, each 60% safe and 40% unsafe (96, 96 and 40 examples), so the majority class (safe) is 60% of
valid.jsonl.

The tokenizer is trained without the labels, so `safe` and `unsafe` are not tokens of it: the run adds each as one
token, and a LoRA trains their rows (peft's trainable_token_indices), which the adapter carries into stage 2.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))  # the tests' builders: tests/support/
sys.path.insert(0, str(HERE))

from guard_data import LABELS, guard_prompt, guard_set, user_messages  # noqa: E402

from support.models import build_tiny_model, build_tokenizer, write_jsonl  # noqa: E402

#: examples and unsafe ones of each file: 60% safe everywhere
SPLITS = {"train_1": (96, 38, 1), "train_2": (96, 38, 2), "valid": (40, 16, 3)}


def tokenizer_corpus() -> list[str]:
    """Every short prompt the data can hold, with the labels taken out (see the module's docstring)."""
    corpus = [guard_prompt(message, short=True) for message in user_messages()]
    for label in sorted(LABELS, key=len, reverse=True):
        corpus = [text.replace(label, "") for text in corpus]
    return corpus


if __name__ == "__main__":
    build_tiny_model(HERE / "model", tokenizer=False)
    build_tokenizer(HERE / "model", corpus=tokenizer_corpus())
    for name, (n, unsafe, seed) in SPLITS.items():
        write_jsonl(HERE / "data" / f"{name}.jsonl", guard_set(n, unsafe=unsafe, seed=seed, short=True))
    print(f"wrote {HERE / 'model'} and {HERE / 'data'}")
