"""Regenerate this example's data halves and its stage-1 adapter (committed; run only to change them).

    python examples/seed-continue-from-checkpoint/make_assets.py

As in the guide this example mirrors: the data set is split in two halves; checkpoint/ is a LoRA adapter trained
on the first half (train_1.jsonl) on top of the quickstart's tiny model, and job.yaml continues it on the second.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the tests' builders: tests/support/

from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "quickstart" / "model"


def render(example: dict) -> tuple[str, str]:
    user, assistant = example["messages"]
    prompt = PROMPT_FORMAT["bos"] + PROMPT_FORMAT["user"].replace("{instruction}", user["content"])
    return prompt, PROMPT_FORMAT["assistant"].replace("{instruction}", assistant["content"])


def train_stage_one(examples: list[dict], out: Path, steps: int = 60) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(BASE, trust_remote_code=False)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(BASE, trust_remote_code=False),
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(steps):
        prompt, answer = render(examples[step % len(examples)])
        p_ids = tok(prompt, add_special_tokens=False).input_ids
        a_ids = tok(answer, add_special_tokens=False).input_ids
        ids = torch.tensor([p_ids + a_ids])
        labels = torch.tensor([[-100] * len(p_ids) + a_ids])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    # name the architecture, not this machine's path to the base weights
    model.peft_config["default"].base_model_name_or_path = "ftc-examples/tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model card template


if __name__ == "__main__":
    examples = arithmetic_examples(256, seed=11)
    write_jsonl(HERE / "data" / "train_1.jsonl", examples[:128])
    write_jsonl(HERE / "data" / "train_2.jsonl", examples[128:])
    write_jsonl(HERE / "data" / "test.jsonl", arithmetic_examples(32, seed=12))
    train_stage_one(examples[:128], HERE / "checkpoint")
    print(f"wrote {HERE / 'data'} and {HERE / 'checkpoint'}")
