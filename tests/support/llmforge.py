"""llmforge's Llama Guard 2 config (tests/data/llmforge), verbatim but for its model: a job folder that trains it on
a tiny random Llama (the family Llama Guard 2 is), as its README says to use one (the config, its DeepSpeed files
beside it, data/train.jsonl and data/valid.jsonl)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .models import arithmetic_examples, build_tiny_model, write_jsonl

LLMFORGE = Path(__file__).resolve().parents[1] / "data" / "llmforge"
LLAMA_GUARD_2 = LLMFORGE / "configs/training_configs/custom/meta-llama/Meta-Llama-Guard-2-8B/lora/llama-guard-2.yaml"
MODEL_LINE = "model_id: meta-llama/Meta-Llama-Guard-2-8B\n"


def llama_guard_2_job(folder: Path, *, replace: dict[str, str] | None = None) -> Path:
    """Write the Llama Guard 2 config into ``folder`` with ``model_id`` and its weights swapped for a tiny Llama
    (``weights/base``; 4096 positions, as the config's context_length asks), every other line as llmforge wrote it
    except the ``replace`` ones (old line text -> new); return the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = LLAMA_GUARD_2.read_text()
    assert text.count(MODEL_LINE) == 1
    text = text.replace(MODEL_LINE, "model_id: ftc-tests/tiny-llama\ninitial_base_model_ckpt_path: weights/base\n")
    for old, new in (replace or {}).items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    shutil.copytree(LLMFORGE / "deepspeed_configs", folder / "deepspeed_configs", dirs_exist_ok=True)
    if not (folder / "weights" / "base").exists():
        build_tiny_model(folder / "weights" / "base", max_position_embeddings=4096)
    write_jsonl(folder / "data" / "train.jsonl", arithmetic_examples(32, seed=1))
    write_jsonl(folder / "data" / "valid.jsonl", arithmetic_examples(4, seed=2))
    spec = folder / "job.yaml"
    spec.write_text(text)
    return spec
