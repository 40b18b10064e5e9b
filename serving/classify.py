"""A classifier (``task: classification``) served: its class is read, not generated. Its answer is one label token
(with, in Llama Guard's way, a line of categories after it), so the next-token logits after the prompt (the
conversation up to the answer, rendered as a server renders it, the trailing assistant header included) say how
likely each label is, among the labels only (training's ``label_probabilities``).

``ftc eval`` scores a data file with training's own evaluation (``evaluate_classifier``: the same forward pass, the
same scikit-learn metrics), so a checkpoint's numbers here are the ones its run recorded on the same data. Where
answers have a category line, it is generated after the true label and scored by exact match. ``ftc generate``
answers with the most probable label and its probability. An export records its labels and their token ids (lineage
record, config.json, model card: :func:`config_label_map`), so it is served the same way.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftc.errors import DataInvalid, UsageError
from ftc.spec.chat_data import MAX_REPORTED, answer_label, label_problem, read_chat_jsonl
from ftc.spec.text import for_terminal
from ftc.stores.atomic import write_text_atomic

from .generate import Session, check_read, data_file, hashed_data
from .trained import Trained

__all__ = [
    "Verdict",
    "category_prompt",
    "check_threshold",
    "classify",
    "config_label_map",
    "label_ids",
    "labelled_conversations",
    "score_classifier",
]

#: labels named one by one in a problem (a classifier may have up to a thousand)
_LABELS_SHOWN = 10


def config_label_map(labels: tuple[str, ...] | list[str], token_ids: list[int]) -> dict[str, Any]:
    """What an export's config.json gains for a classifier: transformers' own ``id2label`` and ``label2id`` (class
    index <-> label, in the labels' order) and ``label_token_ids`` (label -> the token whose logit scores it)."""
    return {
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "label_token_ids": dict(zip(labels, token_ids)),
    }


def check_threshold(trained: Trained, threshold: float | None) -> None:
    """Refuse a ``threshold`` (``ftc eval --threshold``) that ``trained`` cannot take: one outside (0, 1), or any
    threshold for a model that is not a classifier of exactly two labels."""
    if threshold is None:
        return
    if not (math.isfinite(threshold) and 0 < threshold < 1):
        raise UsageError(f"--threshold {threshold}: a probability strictly between 0 and 1")
    if trained.labels is None:
        raise UsageError(
            f"--threshold is for a classifier; {trained.folder} answers in text (its task has no "
            "classifier_config), and ftc eval scores it by exact match\n    fix: drop --threshold"
        )
    if len(trained.labels) != 2:
        raise UsageError(
            f"--threshold is for a classifier of two labels (the second is predicted when its probability is at "
            f"least the threshold); {trained.folder} has {len(trained.labels)}\n    fix: drop --threshold: the "
            "most probable label is predicted"
        )


def label_ids(session: Session) -> list[int]:
    """The token id of each of the session's labels, in their order, from the tokenizer saved with the model."""
    from ftc.runtime.training.tokens import label_token_ids

    return label_token_ids(session.tokenizer, list(session.trained.labels or ()))


def _not_a_label(found: str, labels: tuple[str, ...]) -> str:
    shown = found if len(found) <= 40 else found[:40] + "..."
    named = ", ".join(json.dumps(label) for label in labels[:_LABELS_SHOWN])
    more = f" and {len(labels) - _LABELS_SHOWN} more" if len(labels) > _LABELS_SHOWN else ""
    return f"the final answer's first line {json.dumps(shown)} is not one of the labels ({named}{more})"


def labelled_conversations(path: Path, labels: tuple[str, ...]) -> list[tuple[int, list[dict[str, Any]], int]]:
    """``(line, the conversation before its final answer, its class)`` of every example of the chat-JSONL file
    ``path``; the class is the final assistant answer's first line (a category line may follow it), as an index
    into ``labels``. Every bad line (not a chat example with an answer, an answer whose first line is not a label,
    or whose line after it is blank or more than one line) stops it at once: the first ones with ``path:line``,
    then how many more."""
    return [(line, messages, label) for line, messages, label, _ in _labelled_answers(path, labels)]


def _labelled_answers(path: Path, labels: tuple[str, ...]) -> list[tuple[int, list[dict[str, Any]], int, str | None]]:
    """:func:`labelled_conversations` with each final answer's category line (None where it has none)."""
    index = {label: i for i, label in enumerate(labels)}
    found, bad, count = [], [], 0
    for item in read_chat_jsonl(data_file(path), require_answer=True):
        reason = item.problem
        if item.messages is not None:
            last = max(i for i, m in enumerate(item.messages) if m["role"] == "assistant")
            label, categories = answer_label(item.messages[last]["content"])
            if last != len(item.messages) - 1:  # turns after the answer: training refuses the line too
                reason = label_problem(item.messages, labels)
            else:
                reason = _not_a_label(label, labels) if label not in index else label_problem(item.messages, labels)
            if reason is None:  # the answer's label, then at most one non-blank line of categories
                found.append((item.line, item.messages[:last], index[label], categories))
                continue
        count += 1
        if len(bad) < MAX_REPORTED:
            bad.append(f"{path}:{item.line}: {reason}")
    if count:
        more = [f"{path}: and {count - len(bad)} more bad lines"] if count > len(bad) else []
        raise DataInvalid(
            f"{path}: {count} line(s) cannot be scored:\n" + "\n".join(bad + more) + "\n    fix: each line must be "
            "a chat example whose final assistant answer's first line is one of the classifier's labels, optionally "
            "followed by one line of categories"
        )
    if not found:
        raise DataInvalid(f"{path}: no examples")
    return found


def _predicted(probs: Any, truth: Any, labels: list[str], threshold: float | None, metrics: dict[str, Any]):
    """Each example's predicted class and the metrics of those predictions: the most probable label, or with a
    ``threshold`` (two labels) the second wherever its probability is at least the threshold. PR-AUC ranks the
    probabilities and takes no threshold."""
    from ftc.runtime.training.classification import METRICS, classification_metrics

    if threshold is None:
        return probs.argmax(axis=1), metrics
    predicted = (probs[:, 1] >= threshold).astype(np.int64)
    return predicted, classification_metrics(probs, truth, labels, list(METRICS), predicted=predicted)


def category_prompt(session: Session, messages: list[dict[str, Any]], label: str, where: str) -> list[int]:
    """The token ids after which a classifier's category line comes (``unsafe\nS1,S3``): the prompt a server sends for
    ``messages`` (:meth:`Session.prompt`), the token of their true ``label`` (teacher-forced), and the newline that
    separates the label from its category line in the answer, as the tokenizer encodes that text whole (as training
    tokenized the rendered answer). A tokenizer that does not keep the prompt's tokens and the label's apart (which
    training refuses, so no classifier trained with this template has one) is a data problem at ``where``."""
    from ftc.runtime.training.generation import prompt_text
    from ftc.runtime.training.tokens import label_token_ids

    prompt = session.prompt(messages, where)
    text = prompt_text(messages, session.trained.prompt_format, session.tokenizer) + label + "\n"
    ids = list(session.tokenizer(text, add_special_tokens=False)["input_ids"])
    head = [*prompt, *label_token_ids(session.tokenizer, [label])]
    if ids[: len(head)] != head or len(ids) == len(head):
        raise DataInvalid(
            f"{where}: the prompt, the label {label!r} and a newline tokenized together are not the prompt's tokens, "
            f"the label's token {head[-1]} and the newline's: {ids[len(prompt) :]} after the prompt's\n    fix: "
            "evaluate the categories with the prompt format the classifier was trained with"
        )
    return ids


def _categories(session: Session, forced: list[list[int] | None], expected: list[str | None], sampling: Any):
    """The category line generated after each ``forced`` prompt (:func:`category_prompt`; None: the example has
    none), up to its end of turn or stop and stripped, compared with the ``expected`` one: per example (None where
    none), and the share of exact matches with how many there were (nothing where no example has one)."""
    from ftc.runtime.training.progress import CountProgress

    found: list[str | None] = []
    with CountProgress(sum(ids is not None for ids in forced), "evaluation (categories)", "answer") as shown:
        for ids in forced:
            found.append(None if ids is None else session.generate(ids, sampling).text.strip())
            if ids is not None:
                shown.update()
    pairs = [(truth, got) for truth, got in zip(expected, found) if truth is not None]
    if not pairs:
        return found, {}
    matches = sum(truth == got for truth, got in pairs)
    return found, {
        "category_exact_match": matches / len(pairs), "category_examples": len(pairs),
        "max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
    }  # fmt: skip


def score_classifier(
    session: Session,
    data: Path,
    out: Path,
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    sampling: Any = None,
) -> dict[str, Any]:
    """Score the classifier of ``session`` on every example of ``data`` (one forward pass each, ``batch_size`` at a
    time): each label's probability at the answer, the predicted and the true label, as one JSON line per example
    written to ``out`` (atomically); returns the metrics (accuracy, precision, recall and F1 per class and macro,
    PR-AUC per class and macro, the confusion matrix, each class's support) with what was scored. Where answers
    have a category line after their label, each is generated after the true label (:func:`category_prompt`, with
    ``sampling``: greedy by default) and scored by exact match (``category_exact_match``, ``category_examples``;
    each row's ``expected_categories`` and ``categories``)."""
    import torch

    from ftc.runtime.training.classification import METRICS, evaluate_classifier
    from ftc.runtime.training.distributed import Dist
    from ftc.runtime.training.generation import Sampling
    from ftc.runtime.training.tokens import Examples

    trained = session.trained
    if trained.labels is None:
        raise UsageError(f"{trained.folder} is not a classifier (its task has no classifier_config)")
    check_threshold(trained, threshold)
    labels = list(trained.labels)
    sha, read = hashed_data(data)  # what was scored: the file as it was before reading it
    examples = _labelled_answers(data, trained.labels)
    check_read(data, read)
    ids = label_ids(session)
    where = [f"{data}:{line}" for line, *_ in examples]
    prompts = [session.prompt(messages, at) for at, (_, messages, _, _) in zip(where, examples)]  # all checked first
    forced = [
        None if categories is None else category_prompt(session, messages, labels[truth], at)
        for at, (_, messages, truth, categories) in zip(where, examples)
    ]
    # each prompt with its true label token after it, which only marks where the answer is: a causal model's logits
    # before a token do not see it
    tokenized = Examples(
        [np.array([*prompt, ids[truth]], dtype=np.int64) for prompt, (_, _, truth, _) in zip(prompts, examples)],
        [np.arange(len(prompt) + 1) == len(prompt) for prompt in prompts],
        [line for line, *_ in examples],
    )
    pad = session.tokenizer.pad_token_id
    device = next(session.model.parameters()).device
    classified = evaluate_classifier(
        session.model, tokenized, label_token_ids=ids, label_names=labels, wanted=list(METRICS),
        pad_id=pad if pad is not None else 0, batch_size=batch_size, dist=Dist(0, 0, 1, torch.device(device)),
    )  # fmt: skip
    probs, truth = classified.probabilities, classified.truth
    predicted, metrics = _predicted(probs, truth, labels, threshold, classified.metrics)
    expected = [None if categories is None else categories.strip() for *_, categories in examples]
    generated, categorized = _categories(session, forced, expected, sampling or Sampling())
    rows = [
        {"line": line, "expected": labels[truth[i]], "predicted": labels[predicted[i]],
         "probabilities": dict(zip(labels, map(float, probs[i]))),
         **({"expected_categories": expected[i], "categories": generated[i]} if categorized else {})}
        for i, line in enumerate(tokenized.lines)
    ]  # fmt: skip
    write_text_atomic(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return {
        **trained.identity(), "data": str(data),
        "data_sha256": f"sha256:{sha}", "examples": len(rows), "threshold": threshold, **metrics, **categorized,
        "outputs": str(out),
    }  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """A classifier's answer to one prompt: the most probable label, its probability, and every label's."""

    label: str
    probability: float
    probabilities: dict[str, float]

    def text(self) -> str:
        """The verdict as ``ftc generate`` prints it: ``unsafe (p=0.93)``."""
        return f"{for_terminal(self.label)} (p={self.probability:.2f})"


def _takes_logits_to_keep(model: Any) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def classify(session: Session, ids: list[int]) -> Verdict:
    """The classifier's verdict on the prompt ``ids`` (from :meth:`Session.prompt`): one forward pass, the label
    tokens' logits at its last position."""
    import torch

    from ftc.runtime.training.classification import label_probabilities

    model = session.model
    keep = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}  # the last position's logits only
    with torch.no_grad():
        device = next(model.parameters()).device
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False, **keep).logits[:, -1]
    probs = label_probabilities(logits.float(), label_ids(session))[0]
    labels = list(session.trained.labels or ())
    best = int(probs.argmax())
    return Verdict(labels[best], float(probs[best]), dict(zip(labels, map(float, probs))))
