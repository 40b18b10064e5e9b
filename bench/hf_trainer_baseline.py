"""The baseline: fine-tuning with a plain Hugging Face Trainer, written the way a typical user writes it.

Same rendered conversations and the same assistant-only labels as ftc (so both learn the same thing), batches
padded to their longest example by DataCollatorForSeq2Seq, AdamW, no packing. Used by bench/train_bench.py:

    python bench/hf_trainer_baseline.py WORKDIR RESULT.json
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

START = time.time()


def main(workdir: Path, result: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    settings = json.loads((workdir / "settings.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32)

    rows = []
    for line in (workdir / "train.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        ids = tokenizer(full, add_special_tokens=False).input_ids
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p_ids) + ids[len(p_ids):]})

    steps: list[tuple[float, int]] = []

    class TimedTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            steps.append((time.time(), int(inputs["attention_mask"].sum())))
            return loss

    args = TrainingArguments(
        output_dir=str(workdir / "hf-out"),
        per_device_train_batch_size=settings["batch_size"],
        num_train_epochs=1,
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="cosine",
        logging_steps=10**9,
        save_strategy="no",
        report_to=[],
        seed=settings["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = TimedTrainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"))
    trainer.train()
    result.write_text(json.dumps({"start": START, "steps": steps, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
