"""A classifier's evaluation (``task: classification``): one forward pass over the validation examples, the label
tokens' logits at each answer position, the probability of each label, and the metrics a classifier is judged by.

No text is generated: an example's answer is its one label token, so the logits that predict it (at the position
before it) say how likely each label is. Only the label tokens' logits count (``label_probabilities``): the
probability of a label is its share among the labels, whatever else the model would have said there.

The metrics are scikit-learn's (``classification_metrics``), which ftc does not reimplement: accuracy; precision,
recall and F1 per class and their macro mean; PR-AUC per class (one-vs-rest) and its macro mean; the confusion
matrix and each class's support. scikit-learn is imported inside the functions that use it, never on the command
line's start-up path.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batches import IGNORE, collate, group
from .distributed import Dist
from .progress import CLASSIFIER_SCALARS, CountProgress

__all__ = [
    "METRICS",
    "Classified",
    "answer_positions",
    "classification_metrics",
    "evaluate_classifier",
    "label_probabilities",
]

#: the metric names ``eval_metrics`` may hold (llmforge's): what each adds to an evaluation (always: the confusion
#: matrix and each class's support)
METRICS = {
    "accuracy": ("accuracy",),
    "f1": ("precision_macro", "recall_macro", "f1_macro", "precision", "recall", "f1"),
    "prauc": ("prauc_macro", "prauc"),
}


def label_probabilities(logits_at_answer: Any, label_token_ids: list[int]) -> Any:
    """The probability of each label at each answer: softmax over the label tokens' logits only (the probability
    among the labels, not among the whole vocabulary). ``logits_at_answer``: (N, vocabulary), the logits that
    predict each answer's token. Returns (N, labels) float64 probabilities, rows summing to 1, columns in
    ``label_token_ids``' order."""
    import torch

    logits = torch.as_tensor(logits_at_answer)
    ids = torch.as_tensor(label_token_ids, dtype=torch.long, device=logits.device)
    return torch.softmax(logits.index_select(-1, ids).double(), dim=-1).cpu().numpy()


def answer_positions(labels: Any, label_token_ids: list[int]) -> tuple[Any, Any, Any]:
    """Where the answers are in a batch (``collate``'s labels, padded or packed): the positions whose logits predict
    an answer's label token, i.e. where a run of trained (shifted) labels begins with a label token. An answer is
    its label alone, or its label and a line of categories trained after it: only the run's first token is the
    class. A packed row holds one per example. Returns ``(rows, columns, truth)``: the answers' rows and columns in
    the logits, and each answer's label as an index into ``label_token_ids``, in row-major order (a packed row's
    examples in their order)."""
    import torch

    labels = torch.as_tensor(labels)
    shifted = labels[:, 1:]
    ids = torch.as_tensor(label_token_ids, dtype=shifted.dtype, device=shifted.device)
    trained = shifted != IGNORE
    begins = trained.clone()
    begins[:, 1:] &= ~trained[:, :-1]
    hit = begins & torch.isin(shifted, ids)
    rows, columns = hit.nonzero(as_tuple=True)  # row-major: each row's answers left to right
    truth = (shifted[rows, columns][:, None] == ids[None, :]).long().argmax(dim=1)
    return rows, columns, truth


def _check_wanted(wanted: list[str]) -> None:
    unknown = [name for name in wanted if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown classification metric(s) {unknown}; known: {sorted(METRICS)}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"a classification metric came out {value}")
    return float(value)


def _predictions(probs: np.ndarray, truth: np.ndarray, predicted: Any) -> np.ndarray:
    """``predicted`` as label indices (checked against ``probs``' labels), or the most probable labels."""
    if predicted is None:
        return probs.argmax(axis=1)
    predicted = np.asarray(predicted)
    k = probs.shape[1]
    if predicted.shape != truth.shape or not np.issubdtype(predicted.dtype, np.integer):
        raise ValueError(f"predictions of shape {predicted.shape} ({predicted.dtype}) for {len(truth)} answers")
    if ((predicted < 0) | (predicted >= k)).any():
        raise ValueError(f"a predicted class outside the {k} labels")
    return predicted.astype(np.int64)


def classification_metrics(
    probs: Any, truth: Any, label_names: list[str], wanted: list[str], predicted: Any = None
) -> dict[str, Any]:
    """The metrics of predictions ``probs`` (N, labels) against ``truth`` (N label indices), as plain JSON types.

    The predicted class is ``predicted`` (N label indices) where given, such as a threshold's decisions; else the
    most probable label (a tie goes to the first of the tied labels in ``label_names``' order). Accuracy,
    precision, recall, F1 and the confusion matrix are the predicted classes'; PR-AUC ranks ``probs`` whatever was
    predicted. Always given: ``examples``, ``labels``, ``support`` (per class) and ``confusion_matrix`` (rows: the true
    class, columns: the predicted one, in ``label_names``' order). The ``wanted`` names (``METRICS``) add:

    - ``accuracy``: the share of examples whose predicted class is the true one.
    - ``f1``: ``precision``, ``recall``, ``f1`` per class and their ``_macro`` means (scikit-learn's
      ``precision_recall_fscore_support``). A class the model never predicts has precision 0 (``zero_division=0``).
    - ``prauc``: PR-AUC per class, one-vs-rest on that class's probability, and its macro mean: scikit-learn's
      ``average_precision_score`` (the step-wise sum of precision times the rise in recall at each threshold), not
      ``auc(precision_recall_curve)``, whose linear interpolation between the curve's points overstates the area.

    A class absent from ``truth`` has no recall, F1 or PR-AUC (nothing to find): those are null (``None``), its
    precision is 0 if it was predicted and null if not, and the macro means are over the classes present in
    ``truth`` only. Every number is finite. ``wanted`` names outside ``METRICS`` are a ValueError."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    _check_wanted(wanted)
    probs, truth = np.asarray(probs, dtype=np.float64), np.asarray(truth, dtype=np.int64)
    k = len(label_names)
    if probs.ndim != 2 or probs.shape != (len(truth), k) or not len(truth):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(truth)} answers and {k} labels")
    predicted = _predictions(probs, truth, predicted)
    support = np.bincount(truth, minlength=k)
    present = [c for c in range(k) if support[c] > 0]
    out: dict[str, Any] = {
        "examples": int(len(truth)),
        "labels": list(label_names),
        "support": {label_names[c]: int(support[c]) for c in range(k)},
        "confusion_matrix": confusion_matrix(truth, predicted, labels=list(range(k))).tolist(),
    }
    if "accuracy" in wanted:
        out["accuracy"] = _finite(accuracy_score(truth, predicted))
    if "f1" in wanted:
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, labels=list(range(k)), average=None, zero_division=0
        )
        predicted_any = np.bincount(predicted, minlength=k) > 0
        out["precision"] = {
            n: _finite(p[c]) if support[c] or predicted_any[c] else None for c, n in enumerate(label_names)
        }
        out["recall"] = {n: _finite(r[c]) if support[c] else None for c, n in enumerate(label_names)}
        out["f1"] = {n: _finite(f[c]) if support[c] else None for c, n in enumerate(label_names)}
        for name, values in (("precision", p), ("recall", r), ("f1", f)):
            out[f"{name}_macro"] = _finite(np.mean(values[present]))
    if "prauc" in wanted:
        pr = {c: _finite(average_precision_score(truth == c, probs[:, c])) for c in present}
        out["prauc"] = {n: pr.get(c) for c, n in enumerate(label_names)}
        out["prauc_macro"] = _finite(np.mean(list(pr.values())))
    return out


@dataclass
class Classified:
    """A classifier's evaluation: each validation example's label probabilities (N, labels), in the examples'
    order, its true label (N), the mean cross-entropy of the label token over the whole vocabulary (the token loss
    when the label is the only trained token), and the metrics (``classification_metrics``)."""

    probabilities: np.ndarray
    truth: np.ndarray
    label_loss: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def record_fields(self) -> dict[str, Any]:
        """The metrics as an evaluation record carries them (metrics.jsonl, summary.json, lineage results): the
        scalars as ``eval_accuracy``, ``eval_f1_macro``, ``eval_precision_macro``, ``eval_recall_macro``,
        ``eval_prauc_macro``; per class, ``eval_classes`` (label -> its support and per-class values); the
        ``eval_confusion_matrix`` (rows true, columns predicted, in the labels' order)."""
        m = self.metrics
        fields: dict[str, Any] = {key: m[key[5:]] for key in CLASSIFIER_SCALARS if key[5:] in m}
        per_class = [k for k in ("precision", "recall", "f1", "prauc") if k in m]
        fields["eval_classes"] = {
            label: {"support": m["support"][label], **{k: m[k][label] for k in per_class}} for label in m["labels"]
        }
        fields["eval_confusion_matrix"] = m["confusion_matrix"]
        return fields


def _forward_kwargs(model: Any, columns: Any) -> dict[str, Any]:
    """Ask for the logits at the answers' columns only where the model takes ``logits_to_keep`` (transformers'
    causal LMs): a (batch, columns, vocabulary) tensor instead of (batch, sequence, vocabulary)."""
    inner = getattr(model, "module", model)  # DeepSpeed's engine
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        return {"logits_to_keep": columns}
    return {}


def _answers(model: Any, batch: Any, label_token_ids: list[int], device: Any) -> tuple[Any, Any, Any]:
    """One forward pass over a batch: the full-vocabulary logits at each answer (N, V) and each answer's truth."""
    import torch

    rows, columns, truth = answer_positions(batch.labels, label_token_ids)
    kept = torch.unique(columns)
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    extra = _forward_kwargs(model, kept.to(device))
    logits = model(**inputs, use_cache=False, **extra).logits
    at = torch.searchsorted(kept, columns) if extra else columns
    return logits[rows.to(logits.device), at.to(logits.device)].float(), truth, batch.labels[:, 1:][rows, columns]


def evaluate_classifier(
    model: Any,
    examples: Any,
    *,
    label_token_ids: list[int],
    label_names: list[str],
    wanted: list[str],
    pad_id: int,
    batch_size: int,
    dist: Dist,
) -> Classified:
    """One forward pass over the validation ``examples`` (tokenized ``Examples``, each with one trained label
    token), ``batch_size`` per rank, every rank its share (as ``mean_token_loss``): each example's label
    probabilities (``label_probabilities``), gathered on every rank in the examples' order, and their metrics
    (``classification_metrics`` with ``wanted``). ``model``: the engine (or any module taking ``input_ids``)."""
    import torch

    _check_wanted(wanted)
    n, k = len(examples), len(label_token_ids)
    probs, truth, losses = np.zeros((n, k)), np.zeros(n), np.zeros(n)
    chunks = group(list(range(n)), batch_size * dist.world)
    was_training = model.training
    model.eval()
    with torch.no_grad(), CountProgress(len(chunks), "evaluation (classifier)", "batch", enabled=dist.main) as shown:
        for chunk in chunks:
            mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
            logits, true, targets = _answers(
                model, collate([(i,) for i in mine], examples, pad_id=pad_id, packed=False), label_token_ids,
                dist.device,
            )  # fmt: skip
            if len(true) != len(mine):
                raise ValueError(f"{len(true)} label answers in a batch of {len(mine)} examples")
            shown.update()
            if not chunk[dist.rank :: dist.world]:
                continue  # the stand-in's answers are not counted
            ce = torch.nn.functional.cross_entropy(logits, targets.to(logits.device), reduction="none")
            probs[mine] = label_probabilities(logits, label_token_ids)
            truth[mine], losses[mine] = true.numpy(), ce.double().cpu().numpy()
    model.train(was_training)
    if dist.world > 1:  # each example is filled in by one rank, zeros elsewhere: a sum gathers them
        flat = dist.sum(*probs.ravel(), *truth, *losses)
        probs = np.asarray(flat[: n * k]).reshape(n, k)
        truth, losses = np.asarray(flat[n * k : n * k + n]), np.asarray(flat[n * k + n :])
    truth = truth.astype(np.int64)
    metrics = classification_metrics(probs, truth, label_names, wanted)
    return Classified(probs, truth, float(losses.mean()), metrics)
