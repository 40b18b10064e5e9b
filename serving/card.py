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
from ftc.stores.sources import kind_named

from .trained import Trained

__all__ = ["model_card"]


#: a classifier's evaluation fields in the card: (record field, model-index metric type, name)
_CLASSIFIER_METRICS = (
    ("eval_accuracy", "accuracy", "accuracy"),
    ("eval_f1_macro", "f1", "macro F1"),
    ("eval_prauc_macro", "pr_auc", "macro PR-AUC"),
)


def _names_a_model(parent: dict[str, Any]) -> bool:
    """A parent recorded as a published model named by its id (the hub's), not as pinned weights."""
    kind = kind_named(parent["source"]["source"])
    return kind is not None and kind.names_a_model


def _metadata(trained: Trained, export: dict[str, Any], name: str) -> str:
    record = trained.record
    base = trained.base_parent
    published = base is not None and _names_a_model(base)
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
    classified = next((e for e in reversed(results["evals"]) if e.get("eval_accuracy") is not None), None)
    for key, kind, what in _CLASSIFIER_METRICS if classified is not None else ():
        if classified.get(key) is not None:
            metrics.append({"type": kind, "name": what, "value": round(float(classified[key]), 6)})
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
    return _fenced_as("", text)


def _fenced_as(language: str, text: str) -> list[str]:
    """``text`` as a fenced code block in ``language`` whose fence no line of it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence]


#: names from records and specs are outside text
_md = for_markdown


def model_card(trained: Trained, export: dict[str, Any], name: str) -> str:
    """The README.md of an export: Hugging Face front matter, then what the weights are, their base, how to load and
    prompt them, the data, the results, a reproduction's verdict and the lineage chain."""
    record = trained.record
    lines = [
        *_about(trained, export, name),
        *_base_weights(trained),
        *(_use_classifier(export) if export.get("classifier") else _use(export)),
        *_data_and_results(record),
        *_reproduction(trained),
        *["", "## Lineage", "", *_fenced(render(record)), ""],
    ]
    return _metadata(trained, export, name) + "\n" + "\n".join(lines)


def _about(trained: Trained, export: dict[str, Any], name: str) -> list[str]:
    """The title, what was exported from which checkpoint, and the signatures."""
    record = trained.record
    checkpoint = record["checkpoint"]
    what = (
        "its LoRA adapter merged (in float32) into the base weights it was trained on"
        if export["merged"]
        else "a LoRA adapter: serve it on the base named below, and no other"
        if trained.adapter
        else "full-parameter fine-tuned weights"
    )
    return [
        f"# {_md(name)}",
        "",
        f"Exported by ftc from checkpoint {_md(checkpoint['name'])} of {_md(trained.model_id)}: {what}; "
        f"weights in {_md(export['dtype'])}. Lineage record of the checkpoint: `{record['record_id']}`; "
        "`ftc lineage verify` on this folder checks every file of it and of its chain.",
        "",
        f"Signatures: the checkpoint is {_md(signature_note(trained.folder, record))}; this export is "
        f"{_md(export_signing_note())} (what a signature proves, and what it does not: ftc's docs/security.md).",
        "",
    ]


def _base_weights(trained: Trained) -> list[str]:
    """Which weights the export derives from: published ones by name, or the user's own by content digest."""
    base = trained.base_parent
    lines = ["## Base weights", ""]
    if base is None:
        lines.append("None recorded.")
    elif _names_a_model(base):
        lines.append(f"The published weights of {_md(trained.model_id)} (not pinned to a revision when trained).")
    else:
        lines += [
            f"Your own weights of the {_md(trained.model_id)} architecture (not its published weights): "
            f"{_md(source_name(base['source']))} ({_md(base['source']['source'])}), "
            f"pinned by content digest {_md(str(base['digest']))}.",
        ]
    return lines


def _use(export: dict[str, Any]) -> list[str]:
    """How to load and prompt the export: its chat template, where generation stops, and a transformers example."""
    stops = ", ".join(_md(json.dumps(s)) for s in export["stop_strings"]) or "the end-of-sequence token"
    template = (
        "renders the spec's prompt_format exactly as training did (the same tokens)"
        if export["chat_template"] == "prompt_format"
        else "is the tokenizer's own, which training used"
    )
    return [
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
    ]


def _use_classifier(export: dict[str, Any]) -> list[str]:
    """How to serve a classifier's export: its labels and their tokens, and a transformers example that reads each
    label's probability from the next-token logits (generating and decoding would drop a label added as a special
    token)."""
    classifier = export["classifier"]
    pairs = list(zip(classifier["labels"], classifier["label_token_ids"]))
    code = "\n".join([
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'folder = "path/to/this/folder"',
        "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)",
        "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False)",
        "label_token_ids = {",
        *(f"    {label!r}: {token}," for label, token in pairs),  # repr: a Python literal of any label
        "}",
        'messages = [{"role": "user", "content": "..."}]',
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
        "return_dict=False)",
        "with torch.no_grad():",
        "    logits = model(ids).logits[0, -1]  # the next token's: the answer's label",
        "probs = torch.softmax(logits[list(label_token_ids.values())].double(), dim=-1)  # among the labels only",
        "print(dict(zip(label_token_ids, probs.tolist())))",
    ])  # fmt: skip
    template = (
        "renders the spec's prompt_format exactly as training did (the same tokens)"
        if export["chat_template"] == "prompt_format"
        else "is the tokenizer's own, which training used"
    )
    return [
        "",
        "## Use",
        "",
        "A classifier: its answer is one label token, and the probability of each label is its share of the label "
        "tokens' next-token probabilities after the prompt (the conversation, then the generation prompt; the chat "
        f"template {template}). Generate nothing: read the next-token logits.",
        "",
        "| class | label | token id |",
        "|---|---|---|",
        *(f"| {i} | {_md(label)} | {token} |" for i, (label, token) in enumerate(pairs)),
        "",
        "config.json holds the same map as transformers reads it, where the export has one (`id2label`, `label2id`: "
        "class index and label; `label_token_ids`: label and token id), and so does lineage.json's "
        "`export.classifier`.",
        "",
        *_fenced_as("python", code),
    ]


def _data_and_results(record: dict[str, Any]) -> list[str]:
    """The datasets trained on, and the evaluations as a table."""
    lines = ["", "## Data", ""]
    lines += [
        f"- {_md(d['role'])}: {_md(source_name(d['source']))} ({_md(d['sha256'])}), {d['examples_used']} examples"
        for d in record["datasets"]
    ]
    evals = record["results"]["evals"]
    columns = [("exact_match", "exact match")]
    if any(e.get("eval_accuracy") is not None for e in evals):  # a classifier's
        columns = [(key, what) for key, _, what in _CLASSIFIER_METRICS]
    lines += [
        "", "## Results", "", "| step | eval loss | " + " | ".join(what for _, what in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]  # fmt: skip
    for e in evals:
        loss = f"{e['eval_loss']:.4f}" if e.get("eval_loss") is not None else "n/a"
        shown = [f"{e[key]:.3f}" if e.get(key) is not None else "n/a" for key, _ in columns]
        lines.append(f"| {e['step']} | {loss} | " + " | ".join(shown) + " |")
    return lines


def _reproduction(trained: Trained) -> list[str]:
    """What a reproduction reproduces and its verdict, when the checkpoint is `ftc reproduce`'s rerun."""
    reproduced = reproduction_of(trained.folder, trained.record)
    if reproduced is None:
        return []
    origin, verdict = reproduced
    return [
        "",
        "## Reproduction",
        "",
        f"This checkpoint is `ftc reproduce`'s rerun of {_md(source_name(origin['source']))} (record"
        f" {_md(str(origin['record_id']))}), from the same plan and pinned inputs: "
        + (f"**{_md(verdict)}**." if verdict else "its verdict was not found beside it."),
    ]
