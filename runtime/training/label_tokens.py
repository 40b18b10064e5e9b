"""A classifier's labels as tokens of its model (``task: classification``): each label one token, the ones the
tokenizer does not already encode as one token added as special tokens, their embedding rows made and trained.

- A label the tokenizer encodes as exactly one token keeps that token; any other is added as a special token
  (``add_special_tokens``), in the order of ``label_tokens``, so the same base tokenizer and labels give the same
  ids in every run (stage 2 of a continued chain adds them again and finds its adapter's rows at those ids).
- The embeddings grow to the tokenizer's length (when they have fewer rows); each added label's row (input, and
  output when not tied) starts at the mean of the rows of the tokens before it, so a new label starts as likely as
  an average token, not as a random one or a padding row's leftovers.
- Full fine-tuning trains the new rows with the rest. LoRA trains them through peft's ``trainable_token_indices``
  (the input embedding's rows, and the output layer's when it is not tied to it): peft saves those rows in the
  adapter's own file, and a continued adapter's config names them again, so they load back with it. The tokenizer
  with the added labels is saved in every checkpoint (as every checkpoint's tokenizer is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["add_label_tokens", "classifier_record", "grow_embeddings", "trainable_token_targets"]


def add_label_tokens(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """Add to ``tokenizer`` each label that it does not encode as one token, as a special token; the ids of those
    added (none when every label is already one token, or was added before)."""
    missing = [label for label in labels if len(tokenizer.encode(label, add_special_tokens=False)) != 1]
    if not missing:
        return []
    tokenizer.add_tokens(missing, special_tokens=True)  # matched whole in any text, never split or normalized
    return [tokenizer.convert_tokens_to_ids(label) for label in missing]


def grow_embeddings(model: Any, rows: int, added: Sequence[int] = ()) -> None:
    """Resize ``model``'s embeddings to ``rows`` (when it has fewer), and start each row of the ``added`` ids at the
    mean of the rows before the first of them: a grown row, or a padding row the model had but no token used."""
    import torch

    if rows > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(rows, mean_resizing=False)
    if not added:
        return
    first = min(added)
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    with torch.no_grad():
        for layer in {id(layer): layer for layer in layers if layer is not None}.values():
            weight = layer.weight
            weight[list(added)] = weight[:first].float().mean(dim=0).to(weight.dtype)


def trainable_token_targets(
    model: Any, ids: Sequence[int], trained_whole: Sequence[str] = ()
) -> dict[str, list[int]] | None:
    """peft's ``trainable_token_indices`` for the rows of ``ids``: the input embedding's module, and the output
    layer's when its weight is not the input embedding's (peft follows a tied one itself); not a module of
    ``trained_whole`` (LoRA's ``modules_to_save``: every row of it is trained already, and peft takes a module in
    one of the two only). None without ids, or when nothing is left."""
    if not ids:
        return None
    names = {id(module): name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    out = {names[id(embedding)]: list(ids)}
    if output is not None and output.weight is not embedding.weight:
        out[names[id(output)]] = list(ids)
    out = {name: rows for name, rows in out.items() if name not in trained_whole}
    return out or None


def classifier_record(engine: Any, examples: Any, tokenizer: Any, spec: Any, dist: Any) -> dict[str, Any]:
    """A classifier's metrics over the validation ``examples``, as an evaluation record carries them: the metrics
    module's one forward pass (:func:`ftc.runtime.training.classification.evaluate_classifier`, no generation) at
    the labels' token ids, with the spec's ``eval_metrics``. Empty for a spec that is not a classifier's, or
    without validation examples."""
    from .classification import evaluate_classifier
    from .tokens import label_token_ids

    labels = spec.classifier_config
    if labels is None or examples is None:
        return {}
    classified = evaluate_classifier(
        engine, examples, label_token_ids=label_token_ids(tokenizer, labels.label_tokens),
        label_names=list(labels.label_tokens), wanted=list(labels.eval_metrics), pad_id=tokenizer.pad_token_id,
        batch_size=spec.eval_batch_size_per_device, dist=dist,
    )  # fmt: skip
    return classified.record_fields()
