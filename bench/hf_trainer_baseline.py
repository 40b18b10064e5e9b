"""The baseline: fine-tuning with a plain Hugging Face Trainer, written the way a typical user writes it.

Same rendered conversations and the same assistant-only labels as ftc (so both learn the same thing), AdamW,
cosine schedule; bf16 mixed precision on a GPU (``bf16=True``), fp32 on CPU. Two layouts:

- ``padded``: one example per row, each batch padded to its longest (DataCollatorForSeq2Seq): the Trainer's way.
- ``naive-packed``: all examples concatenated and cut into rows of ``context`` tokens (``group_texts`` in
  transformers' examples): no padding, but samples attend to the ones before them in the row.

Used by bench/train_bench.py, which writes ``settings.json`` in WORKDIR:

    python bench/hf_trainer_baseline.py WORKDIR RESULT.json --layout padded|naive-packed

RESULT.json holds "start" (the process's start, before the imports), "steps": one [time, real tokens, rows] per
optimizer step (``gradient_accumulation_steps`` is 1: one ``training_step`` a step), the time taken when its
backward is done (on a GPU after a synchronize), so the time from one to the next holds one optimizer step, one
batch's collation, one forward and backward; real tokens are the attention mask's sum (padding excluded),
"rows_per_step" (a full step's rows: a step with fewer is partial) and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

START = time.time()


def rows_of(workdir: Path, tokenizer, layout: str, context: int) -> list[dict]:
    rows = []
    for line in (workdir / "train.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        ids = tokenizer(full, add_special_tokens=False).input_ids
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p_ids) + ids[len(p_ids) :]}
        )
    if layout == "padded":
        return rows
    ids = [t for r in rows for t in r["input_ids"]]
    labels = [t for r in rows for t in r["labels"]]
    return [
        {"input_ids": ids[i : i + context], "attention_mask": [1] * context, "labels": labels[i : i + context]}
        for i in range(0, len(ids) - context + 1, context)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--layout", choices=["padded", "naive-packed"], required=True)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    s = json.loads((args.workdir / "settings.json").read_text())
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.workdir / "model", trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(args.workdir / "model", dtype=torch.float32, trust_remote_code=False)
    if s["lora"]:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=s["lora"]["r"], lora_alpha=s["lora"]["alpha"], target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
    rows = rows_of(args.workdir, tokenizer, args.layout, s["context"])
    batch = s["hf_padded_batch"] if args.layout == "padded" else s["hf_packed_rows"]

    steps: list[tuple[float, int, int]] = []

    class TimedTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if cuda:
                torch.cuda.synchronize()  # the step's time, not its launch
            mask = inputs["attention_mask"]
            steps.append((time.time(), int(mask.sum()), int(mask.shape[0])))
            return loss

    training = TrainingArguments(
        output_dir=str(args.workdir / "hf-out"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,  # one training_step a step: the timing above depends on it
        max_steps=s["steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type="cosine",
        logging_steps=10**9,
        save_strategy="no",
        report_to=[],
        seed=s["seed"],
        bf16=cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not cuda,
    )
    trainer = TimedTrainer(
        model=model,
        args=training,
        train_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"),
    )
    result = {"start": START, "steps": steps, "rows_per_step": batch}
    try:
        trainer.train()
    except torch.OutOfMemoryError:
        result["failed"] = "out of memory"
    if cuda:
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
