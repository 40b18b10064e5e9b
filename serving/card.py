"""The model card (README.md) of an export: Hugging Face metadata (base model and relation, results), what the
weights are and derive from, how to load and prompt them, and the lineage chain. Built from verified records only."""

from __future__ import annotations

import json
import re
from typing import Any

from ftc.lineage.export import front_matter
from ftc.lineage.record import reproduction_of
from ftc.lineage.show import render, source_name
from ftc.lineage.signature_check import signature_note
from ftc.lineage.signing import export_signing_note
from ftc.spec.text import for_markdown

from .trained import Trained

__all__ = ["model_card"]


def _metadata(trained: Trained, export: dict[str, Any], name: str) -> str:
    record = trained.record
    base = trained.base_parent
    published = base is not None and base["source"]["source"] == "hub"
    relation = "adapter" if trained.adapter and not export["merged"] else "finetune"
    metadata: dict[str, Any] = {}
    if published:  # base_model names a model on the Hub: only true of its published weights
        metadata["base_model"] = trained.model_id
    metadata.update(
        {
            "base_model_relation": relation,
            "library_name": "peft" if relation == "adapter" else "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["ftc"],
        }
    )
    metrics = []
    results = record["results"]
    if results.get("eval_loss") is not None:
        metrics.append({"type": "loss", "name": "eval loss", "value": round(float(results["eval_loss"]), 6)})
    last_eval = next((e for e in reversed(results["evals"]) if e.get("exact_match") is not None), None)
    if last_eval is not None:
        metrics.append(
            {"type": "exact_match", "name": "exact match", "value": round(float(last_eval["exact_match"]), 6)}
        )
    valid = next((d for d in record["datasets"] if d["role"] == "valid"), None)
    if metrics and valid is not None:
        metadata["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": source_name(valid["source"]), "type": "json"},
                        "metrics": metrics,
                    }
                ],
            }
        ]
    return front_matter(metadata)


def _fenced(text: str) -> list[str]:
    """``text`` as a fenced code block whose fence no line of it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def model_card(trained: Trained, export: dict[str, Any], name: str) -> str:
    record = trained.record
    checkpoint = record["checkpoint"]
    base = trained.base_parent
    merged = export["merged"]
    what = (
        "its LoRA adapter merged (in float32) into the base weights it was trained on"
        if merged
        else "a LoRA adapter: serve it on the base named below, and no other"
        if trained.adapter
        else "full-parameter fine-tuned weights"
    )
    md = for_markdown  # names from records and specs are outside text
    lines = [
        f"# {md(name)}",
        "",
        f"Exported by ftc from checkpoint {md(checkpoint['name'])} of {md(trained.model_id)}: {what}; "
        f"weights in {md(export['dtype'])}. Lineage record of the checkpoint: `{record['record_id']}`; "
        "`ftc lineage verify` on this folder checks every file of it and of its chain.",
        "",
        f"Signatures: the checkpoint is {md(signature_note(trained.folder, record))}; this export is "
        f"{md(export_signing_note())} (what a signature proves, and what it does not: ftc's docs/security.md).",
        "",
        "## Base weights",
        "",
    ]
    if base is None:
        lines.append("None recorded.")
    elif base["source"]["source"] == "hub":
        lines.append(f"The published weights of {md(trained.model_id)} (not pinned to a revision when trained).")
    else:
        lines += [
            f"Your own weights of the {md(trained.model_id)} architecture (not its published weights): "
            f"{md(source_name(base['source']))} ({md(base['source']['source'])}), "
            f"pinned by content digest {md(str(base['digest']))}.",
        ]
    stops = ", ".join(md(json.dumps(s)) for s in export["stop_strings"]) or "the end-of-sequence token"
    template = (
        "renders the spec's prompt_format exactly as training did (the same tokens)"
        if export["chat_template"] == "prompt_format"
        else "is the tokenizer's own, which training used"
    )
    lines += [
        "",
        "## Use",
        "",
        f"The chat template {template}; generation stops at {stops} "
        f"(`eos_token_id` {export['eos_token_id']} in generation_config.json).",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder", trust_remote_code=False)',
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder", trust_remote_code=False)',
        'messages = [{"role": "user", "content": "..."}]',
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
        "return_dict=False)",
        "out = model.generate(ids, max_new_tokens=64, tokenizer=tokenizer)  # the tokenizer: for the stop strings",
        "print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "## Data",
        "",
    ]
    lines += [
        f"- {md(d['role'])}: {md(source_name(d['source']))} ({md(d['sha256'])}), {d['examples_used']} examples"
        for d in record["datasets"]
    ]
    lines += ["", "## Results", "", "| step | eval loss | exact match |", "|---|---|---|"]
    for e in record["results"]["evals"]:
        loss = f"{e['eval_loss']:.4f}" if e.get("eval_loss") is not None else "n/a"
        match = f"{e['exact_match']:.3f}" if e.get("exact_match") is not None else "n/a"
        lines.append(f"| {e['step']} | {loss} | {match} |")
    reproduced = reproduction_of(trained.folder, record)
    if reproduced is not None:
        origin, verdict = reproduced
        lines += [
            "",
            "## Reproduction",
            "",
            f"This checkpoint is `ftc reproduce`'s rerun of {md(source_name(origin['source']))} (record"
            f" {md(str(origin['record_id']))}), from the same plan and pinned inputs: "
            + (f"**{md(verdict)}**." if verdict else "its verdict was not found beside it."),
        ]
    lines += ["", "## Lineage", "", *_fenced(render(record)), ""]
    return _metadata(trained, export, name) + "\n" + "\n".join(lines)
