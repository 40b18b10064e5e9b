"""Lineage records built directly (no training): sealed, schema-valid checkpoints for tests of what reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftc.lineage.record import LINEAGE_FILE, checkpoint_section, seal

DIGEST = "sha256:" + "0" * 64


def record_for(
    folder: Path, *, model_id: str = "tiny/model", parent: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    """A sealed record of the checkpoint in ``folder`` (its files as they are), with ``parent`` (a sealed record)
    embedded as its adapter-continued parent; ``changes`` replace top-level sections (a dict value is merged)."""
    record: dict[str, Any] = {
        "lineage_version": 1,
        "checkpoint": {**checkpoint_section(folder), "name": folder.name, "model_id": model_id, "kind": "adapter"},
        "parents": [],
        "datasets": [
            {"role": "train", "source": {"source": "local", "kind": "file", "location": "../data/train.jsonl"},
             "sha256": DIGEST, "examples": 4, "examples_used": 4, "examples_skipped": 0}
        ],
        "plan": {"plan_id": DIGEST, "spec_digest": DIGEST, "mode": "lora-new"},
        "environment": {"python": "3.11.0", "platform": "Linux-x86_64", "packages": {"torch": "2.13.0"},
                        "packages_digest": DIGEST},
        "execution": {"nodes": 1, "processes_per_node": 1, "world_size": 1, "device": "cpu", "precision": "fp32",
                      "zero_stage": 0, "deepspeed_config_digest": DIGEST, "seed": 0},
        "results": {"step": 4, "total_steps": 4, "epoch": 1, "status": "complete", "eval_loss": 1.5,
                    "train_loss": 1.7, "evals": [{"step": 4, "eval_loss": 1.5}], "tokens_trained": 100},
    }  # fmt: skip
    if parent is not None:
        record["parents"].append(
            {"role": "adapter", "relation": "adapter-continued",
             "source": {"source": "local", "kind": "dir", "location": f"../{parent['checkpoint']['name']}"},
             "digest": DIGEST, "record_id": parent["record_id"], "lineage": parent}
        )  # fmt: skip
    for key, value in changes.items():
        record[key] = {**record[key], **value} if isinstance(value, dict) else value
    return seal(record)


def write_checkpoint(folder: Path, files: dict[str, str] | None = None, **record: Any) -> dict[str, Any]:
    """A checkpoint folder with ``files`` (name -> text) and its sealed record (``record``: as for
    :func:`record_for`); returns the record."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {"adapter_config.json": "{}"}).items():
        (folder / name).write_text(text)
    sealed = record_for(folder, **record)
    (folder / LINEAGE_FILE).write_text(json.dumps(sealed))
    return sealed


def deep_chain(folder: Path, depth: int) -> dict[str, Any]:
    """A checkpoint in ``folder`` whose record embeds a chain of ``depth`` ancestors (records only: no folders)."""
    scratch = folder.parent / f"{folder.name}-ancestors"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "adapter_config.json").write_text("{}")
    parent = None
    for i in range(depth):
        parent = record_for(scratch, parent=parent, checkpoint={"name": f"step-{i}"})
    return write_checkpoint(folder, parent=parent)
