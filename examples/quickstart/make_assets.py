"""Regenerate the quickstart's tiny model and data (they are committed; run this only to change them).

    python examples/quickstart/make_assets.py

Writes model/ (a random 2-layer Llama, ~0.5 MB of safetensors, with a 512-token BPE tokenizer) and data/
(small additions as chat examples: a task a tiny model visibly learns).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the tests' builders: tests/support/

from support.models import arithmetic_examples, build_tiny_model, write_jsonl

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    build_tiny_model(HERE / "model")
    write_jsonl(HERE / "data" / "train.jsonl", arithmetic_examples(256, seed=1))
    write_jsonl(HERE / "data" / "valid.jsonl", arithmetic_examples(32, seed=2))
    print(f"wrote {HERE / 'model'} and {HERE / 'data'}")
