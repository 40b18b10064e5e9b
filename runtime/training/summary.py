"""What a run leaves at the end: its summary (returned, and written as ``summary.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import StorageFailed
from ftc.spec.plan import Plan
from ftc.stores.atomic import write_text_atomic

from .checkpoint import finished_checkpoints
from .progress import EVAL_SCALARS

__all__ = ["RunSummary", "eval_table", "eval_text", "matched_text", "write_summary"]

#: a classifier's evaluation record holds these beside its scalars (the last one's go to summary.json)
_PER_CLASS = ("eval_classes", "eval_confusion_matrix")


@dataclass
class RunSummary:
    """A run's outcome: its output folder, its checkpoints (the best one by eval loss), its evaluations and the
    examples it skipped per data input."""

    output_dir: Path
    checkpoints: list[Path]
    best: Path | None
    evals: list[dict[str, Any]]
    skipped: dict[str, int]

    @classmethod
    def of_output(cls, out: Path, evals: list[dict[str, Any]], skipped: dict[str, int]) -> RunSummary:
        """The summary of the checkpoints in the output folder ``out`` (``best``: where its link points)."""
        best = out / "best"
        return cls(out, finished_checkpoints(out), best.resolve() if best.exists() else None, evals, skipped)


def write_summary(
    plan: Plan,
    summary: RunSummary,
    *,
    steps: int,
    tokens: int,
    train_loss: float | None,
    tracker: dict[str, Any] | None = None,
) -> None:
    """``summary.json`` in the output folder: the run's numbers in one flat file (for `dvc metrics`, dashboards,
    scripts); the eval curve is in ``evals`` (for `dvc plots`), every step in metrics.jsonl. A classifier's scalar
    metrics are in each evaluation and, with its per-class values and confusion matrix, at the top as the last
    evaluation gave them."""
    losses = [e["eval_loss"] for e in summary.evals if e["eval_loss"] is not None]
    data = {
        "plan_id": plan.plan_id, "steps": steps, "tokens_trained": tokens, "train_loss": train_loss,
        "eval_loss": losses[-1] if losses else None, "best_eval_loss": min(losses) if losses else None,
        "evals": [
            {k: e[k] for k in ("step", "epoch", "eval_loss", "exact_match", *EVAL_SCALARS) if k in e}
            for e in summary.evals
        ],
    }  # fmt: skip
    for key in ("exact_match", *EVAL_SCALARS, *_PER_CLASS):  # each as the last evaluation that has it says
        values = [e[key] for e in summary.evals if e.get(key) is not None]
        if values:
            data[key] = values[-1]
    if tracker:
        data["tracker"] = tracker  # where the run is in the tracker (whose tags name each checkpoint's record_id)
    # a temp file of its own (O_EXCL), renamed: never written through a link planted in the output folder
    write_text_atomic(summary.output_dir / "summary.json", json.dumps(data, indent=2) + "\n", error=StorageFailed)


def matched_text(record: dict[str, Any]) -> str:
    """An evaluation's scores beside its loss, as the run's notes append them: its exact match, a classifier's
    accuracy, macro F1 and macro PR-AUC (nothing for those it does not have)."""
    text = f", exact match {record['exact_match']:.3f}" if record.get("exact_match") is not None else ""
    return text + "".join(
        f", {words} {record[key]:.3f}" for key, words in EVAL_SCALARS.items() if words and record.get(key) is not None
    )


def eval_text(record: dict[str, Any]) -> str:
    """An evaluation in words, as a checkpoint's note says it."""
    if record["eval_loss"] is None:
        return "no valid_path"
    return f"eval loss {record['eval_loss']:.4f}{matched_text(record)}"


def eval_table(evals: list[dict[str, Any]]) -> list[str]:
    """The run's evaluations, one line each, as its last words list them."""
    lines = []
    for record in evals:
        train_loss = "   n/a" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
        loss = "n/a" if record["eval_loss"] is None else f"{record['eval_loss']:.4f}"
        lines.append(f"  step {record['step']:>6}  train loss {train_loss}  eval loss {loss}{matched_text(record)}")
    return lines
