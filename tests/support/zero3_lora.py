"""The two-process ZeRO-3 LoRA run (tests/integration/test_distributed.py::test_zero3_lora_adapter_is_saved_whole):
its job spec and data written into a folder, for scripts that run it outside pytest (bench/stress_shutdown.py).

The spec is the tests' ``job`` fixture's (tests/conftest.py) with that test's changes: 2 processes, ZeRO-3, a rank-4
LoRA on q_proj and v_proj, and evaluation.generate over 5 validation examples (one rank answers 2, the other 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .models import arithmetic_examples, write_jsonl

__all__ = ["ZERO3_LORA", "write_zero3_lora_job"]

#: the test's changes to the fixture's spec
ZERO3_LORA: dict[str, Any] = {
    "num_devices": 2,
    "train_batch_size_per_device": 4,
    "deepspeed": {"zero_stage": 3},
    "lora_config": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
    "evaluation": {"generate": True, "max_new_tokens": 12},
}


def write_zero3_lora_job(folder: Path, model: Path) -> Path:
    """``folder``/job.yaml (training ``model``, a tiny model of ``build_tiny_model``) and its data; its path."""
    write_jsonl(folder / "data" / "train.jsonl", arithmetic_examples(16, seed=1))
    write_jsonl(folder / "data" / "valid.jsonl", arithmetic_examples(5, seed=2))
    spec: dict[str, Any] = {
        "model_id": "ftc-tests/tiny-llama",
        "initial_base_model_ckpt_path": str(model),
        "train_path": "data/train.jsonl",
        "valid_path": "data/valid.jsonl",
        "lora_config": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "context_length": 64,
        **ZERO3_LORA,
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
