"""Measure a LoRA checkpoint's size by part: ftc's checkpoint against the one DeepSpeed's own frozen-weight filter
writes (``save_checkpoint(exclude_frozen_parameters=True)``, what a hand-rolled DeepSpeed script gets), same run.

    python bench/checkpoint_size.py WEIGHTS_FOLDER [--model-id HuggingFaceTB/SmolLM2-135M-Instruct]

WEIGHTS_FOLDER is a model saved with save_pretrained (examples/smollm2-arithmetic/prepare.py writes SmolLM2-135M's).
Each variant trains one step of a LoRA adapter (r=16, all linear layers, ZeRO stage 0 as in that example) in a
temporary folder and reports the bytes of its weights, its training state and the rest. Prints a table and writes
JSON (--json PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _spec(folder: Path, weights: Path, model_id: str) -> Path:
    data = folder / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": f"{i + 1}"}]}
            )
            + "\n"
            for i in range(8)
        )
    )
    spec = {
        "model_id": model_id,
        "initial_base_model_ckpt_path": str(weights),
        "train_path": str(data),
        "lora_config": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
        "num_epochs": 1,
        "train_batch_size_per_device": 8,
        "context_length": 64,
        "deepspeed": {"zero_stage": 0},
        "output_dir": str(folder / "out"),
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _measure(weights: Path, model_id: str, deepspeed_filter_only: bool) -> dict[str, int]:
    from ftc.compiler import compile_spec, write_plan
    from ftc.runtime.launch import run
    from ftc.runtime.training import checkpoint as checkpoints

    with tempfile.TemporaryDirectory(prefix="ftc-ckpt-bench-") as tmp:
        folder = Path(tmp)
        os.environ["FTC_CACHE_DIR"] = str(folder / "cache")
        plan = compile_spec(_spec(folder, weights, model_id), plan_dir=folder).plan
        write_plan(plan, folder / "plan.json")
        keep = checkpoints.frozen_left_out
        if deepspeed_filter_only:
            checkpoints.frozen_left_out = lambda engine, lora: contextlib.nullcontext()
        try:
            run(folder / "plan.json")
        finally:
            checkpoints.frozen_left_out = keep
        (checkpoint,) = (folder / "out" / "checkpoints").glob("step-*")
        sizes = checkpoints.checkpoint_sizes(checkpoint)
        states = next(checkpoint.rglob("mp_rank_00_model_states.pt"))
        return {**sizes, "model_states_pt": states.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--model-id", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {
        "deepspeed filter only": _measure(args.weights.resolve(), args.model_id, deepspeed_filter_only=True),
        "ftc": _measure(args.weights.resolve(), args.model_id, deepspeed_filter_only=False),
    }
    print(f"{'variant':<24}{'weights':>12}{'training state':>16}{'(model states)':>16}{'other':>10}{'total':>12}")
    for name, s in results.items():
        total = s["weights"] + s["training_state"] + s["other"]
        print(
            f"{name:<24}{s['weights'] / 1e6:>10.1f}MB{s['training_state'] / 1e6:>14.1f}MB"
            f"{s['model_states_pt'] / 1e6:>14.1f}MB{s['other'] / 1e6:>8.1f}MB{total / 1e6:>10.1f}MB"
        )
    before = sum(results["deepspeed filter only"][k] for k in ("weights", "training_state", "other"))
    after = sum(results["ftc"][k] for k in ("weights", "training_state", "other"))
    print(f"ftc's checkpoint is {after / before:.2f}x the size ({before / after:.1f}x smaller)")
    if args.json:
        machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
