"""Measure loading a weights folder the way ftc does (``pretrained_causal_lm``: the bytes read into memory, nothing
left mapped from the file) against transformers' default ``from_pretrained`` (the file mapped), same run, same files.

    python bench/weights_load_bench.py [--hidden 1024] [--layers 16] [--shard 2GB] [--repeat 3] [--json PATH]

A random Llama of the given shape is saved as safetensors, once in float32 and once in bfloat16, and loaded in
float32 by each loader in a fresh process (so each peak resident memory is its own), the files already in the page
cache (one unmeasured load first). A load counts until one byte of every 4 KiB page of every parameter was read: a
mapped file is read lazily, and training reads every weight. Reports the median seconds, the ratio, and the peak
resident memory of each (a mapped file's pages count in it as they are read).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: what each fresh process runs: load, read every page, print seconds and peak resident MiB
_LOAD = """
import json, resource, sys, time
import torch
from transformers import AutoModelForCausalLM
from ftc.runtime.training.model import pretrained_causal_lm
path, how = sys.argv[1], sys.argv[2]
started = time.perf_counter()  # (after the imports, which both pay alike)
if how == "ftc":
    model = pretrained_causal_lm(path, dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
touched = sum(int(p.detach().reshape(-1).view(torch.uint8)[::4096].sum()) for p in model.parameters())
seconds = time.perf_counter() - started
print(json.dumps({"s": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _save(folder: Path, hidden: int, layers: int, dtype: str, shard: str) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64, vocab_size=32000, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder, max_shard_size=shard)
    return sum(p.numel() for p in model.parameters())


def _load(folder: Path, how: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, str(folder), how], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--shard", default="2GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    result: dict = {
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__, "hidden": args.hidden, "layers": args.layers, "shard": args.shard,
        "repeat": args.repeat, "files": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="load-bench-") as root:
        for dtype in ("float32", "bfloat16"):
            folder = Path(root) / dtype
            params = _save(folder, args.hidden, args.layers, dtype, args.shard)
            size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            runs: dict[str, list[dict]] = {"ftc": [], "mapped": []}
            for how in runs:
                _load(folder, how)  # the page cache warm, for both alike
            for _ in range(args.repeat):
                for how in runs:
                    runs[how].append(_load(folder, how))
            seconds = {how: statistics.median(r["s"] for r in found) for how, found in runs.items()}
            peak = {how: statistics.median(r["peak_mib"] for r in found) for how, found in runs.items()}
            result["files"][dtype] = {
                "params": params, "file_bytes": size, "load_s": seconds, "peak_rss_mib": peak,
                "ratio_ftc_over_mapped": seconds["ftc"] / seconds["mapped"],
            }  # fmt: skip
            ratio = seconds["ftc"] / seconds["mapped"]
            print(
                f"{dtype} file ({size / 1e6:,.0f} MB, {params:,} parameters) loaded in float32: "
                f"ftc {seconds['ftc']:.2f} s, mapped {seconds['mapped']:.2f} s ({ratio:.2f}x); "
                f"peak memory ftc {peak['ftc']:,.0f} MiB, mapped {peak['mapped']:,.0f} MiB"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
