"""A classifier's metrics and its one forward pass (runtime/training/classification.py), checked against
scikit-learn called directly on the same probabilities, and against a tiny real model's own logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from ftc.runtime.training.batches import IGNORE, collate
from ftc.runtime.training.classification import (
    answer_positions,
    classification_metrics,
    evaluate_classifier,
    label_probabilities,
)
from ftc.runtime.training.distributed import Dist
from ftc.runtime.training.tokens import Examples

ALL = ["accuracy", "f1", "prauc"]
NAMES = ["safe", "unsafe", "unsure"]


def _reference(probs: np.ndarray, truth: np.ndarray, k: int) -> dict:
    """What scikit-learn says, asked the plain way: macro over the classes present in the truth."""
    present = sorted(set(truth.tolist()))
    predicted = probs.argmax(axis=1)
    ref = {"accuracy": float(np.mean(predicted == truth))}
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        ref[f"{name}_macro"] = fn(truth, predicted, labels=present, average="macro", zero_division=0)
    ref["prauc"] = {c: average_precision_score((truth == c).astype(int), probs[:, c]) for c in present}
    ref["prauc_macro"] = float(np.mean(list(ref["prauc"].values())))
    return ref


def _assert_matches(probs, truth, names):
    got = classification_metrics(probs, truth, names, ALL)
    ref = _reference(np.asarray(probs), np.asarray(truth), len(names))
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "prauc_macro"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    for c, value in ref["prauc"].items():
        assert got["prauc"][names[c]] == pytest.approx(value, abs=1e-9)
    assert json.loads(json.dumps(got, allow_nan=False)) == got  # plain, finite JSON
    return got


@pytest.mark.parametrize("seed", range(5))
def test_the_metrics_equal_scikit_learns_on_random_probabilities(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=200)
    truth = rng.integers(0, 3, size=200)
    got = _assert_matches(probs, truth, NAMES)
    assert sum(map(sum, got["confusion_matrix"])) == 200
    assert got["support"] == {n: int((truth == c).sum()) for c, n in enumerate(NAMES)}


def test_a_perfect_classifier_scores_one_everywhere():
    truth = np.array([0, 1, 2, 1, 0])
    got = _assert_matches(np.eye(3)[truth] * 0.9 + 0.1 / 3, truth, NAMES)
    assert got["accuracy"] == got["f1_macro"] == got["prauc_macro"] == 1.0
    assert got["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_an_always_wrong_classifier_scores_zero_accuracy_and_f1():
    truth = np.array([0, 1, 0, 1])
    got = _assert_matches(np.eye(2)[1 - truth], truth, ["safe", "unsafe"])
    assert got["accuracy"] == got["f1_macro"] == 0.0
    assert got["confusion_matrix"] == [[0, 2], [2, 0]]


def test_one_class_only_in_the_truth_leaves_the_others_null_and_out_of_the_macro_means():
    truth = np.zeros(4, dtype=int)
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    got = _assert_matches(probs, truth, NAMES)
    assert got["recall"] == {"safe": 0.75, "unsafe": None, "unsure": None}
    assert got["prauc"]["unsafe"] is None and got["f1"]["unsure"] is None
    assert got["precision"]["unsafe"] == 0.0  # predicted once, wrongly
    assert got["precision"]["unsure"] is None  # never predicted, never true
    assert got["f1_macro"] == pytest.approx(f1_score(truth, probs.argmax(1), labels=[0], average="macro"))


def test_tied_probabilities_predict_the_first_label_and_rank_together():
    truth = np.array([0, 1, 1, 0, 1])
    probs = np.full((5, 2), 0.5)
    got = _assert_matches(probs, truth, ["safe", "unsafe"])
    assert got["confusion_matrix"] == [[2, 0], [3, 0]]
    assert got["prauc"]["unsafe"] == pytest.approx(0.6)  # one threshold: precision 3/5 at recall 1


@pytest.mark.parametrize("seed", range(3))
def test_given_predictions_decide_accuracy_f1_and_the_matrix_and_pr_auc_still_ranks_the_probabilities(seed):
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(2), size=100)
    truth = rng.integers(0, 2, size=100)
    predicted = (probs[:, 1] >= 0.3).astype(np.int64)  # a threshold's decisions, not the most probable label
    assert (predicted != probs.argmax(axis=1)).any()
    got = classification_metrics(probs, truth, ["safe", "unsafe"], ALL, predicted=predicted)
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, labels=[0, 1], zero_division=0)
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    assert got["confusion_matrix"] == confusion_matrix(truth, predicted, labels=[0, 1]).tolist()
    for name, values in (("precision", p), ("recall", r), ("f1", f)):
        assert list(got[name].values()) == pytest.approx(values.tolist(), abs=1e-12), name
        assert got[f"{name}_macro"] == pytest.approx(values.mean(), abs=1e-12), name
    by_argmax = classification_metrics(probs, truth, ["safe", "unsafe"], ALL)
    assert got["accuracy"] != by_argmax["accuracy"]
    assert got["prauc"] == by_argmax["prauc"] and got["prauc_macro"] == by_argmax["prauc_macro"]
    assert got["prauc"]["unsafe"] == pytest.approx(average_precision_score(truth == 1, probs[:, 1]), abs=1e-12)
    # the most probable labels, given, are what no predictions give
    assert classification_metrics(probs, truth, ["safe", "unsafe"], ALL, predicted=probs.argmax(axis=1)) == by_argmax


@pytest.mark.parametrize(
    ("predicted", "says"),
    [([0, 1], "of shape \\(2,\\)"), ([0.0, 1.0, 1.0], "float64"), ([0, 2, 1], "outside the 2 labels"),
     ([0, -1, 1], "outside the 2 labels")],
)  # fmt: skip
def test_predictions_that_are_not_one_label_index_per_answer_are_refused(predicted, says):
    with pytest.raises(ValueError, match=says):
        classification_metrics(np.eye(2)[[0, 1, 1]], np.array([0, 1, 1]), ["a", "b"], ["accuracy"], predicted)


def test_only_the_wanted_metrics_are_given_and_an_unknown_one_is_refused():
    got = classification_metrics(np.eye(2), np.array([0, 1]), ["a", "b"], ["accuracy"])
    assert set(got) == {"examples", "labels", "support", "confusion_matrix", "accuracy"}
    with pytest.raises(ValueError, match="unknown classification metric"):
        classification_metrics(np.eye(2), np.array([0, 1]), ["a", "b"], ["auroc"])


def test_the_probabilities_are_a_softmax_over_the_label_tokens_only():
    logits = torch.tensor([[5.0, 1.0, 2.0, 9.0], [0.0, 3.0, 3.0, -1.0]])
    probs = label_probabilities(logits, [2, 1])
    expected = torch.softmax(logits[:, [2, 1]].double(), dim=-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def _examples(label_ids, truth, seed=0):
    """Examples of a few prompt tokens then one trained label token (the classification layout)."""
    rng = np.random.default_rng(seed)
    ids, trainable = [], []
    for t in truth:
        prompt = rng.integers(10, 100, size=int(rng.integers(3, 9)))
        ids.append(np.concatenate([prompt, [label_ids[t]]]).astype(np.int64))
        trainable.append(np.arange(len(prompt) + 1) == len(prompt))
    return Examples(ids, trainable, list(range(len(truth))))


def test_the_answer_positions_are_found_in_padded_and_packed_rows():
    label_ids = [300, 301]
    examples = _examples(label_ids, [1, 0, 1])
    for packed, rows in ((False, [(0,), (1,), (2,)]), (True, [(0, 1, 2)])):
        batch = collate(rows, examples, pad_id=0, packed=packed)
        r, c, truth = answer_positions(batch.labels, label_ids)
        assert truth.tolist() == [1, 0, 1]
        assert (batch.labels[r, c + 1] != IGNORE).all()
        assert batch.inputs["input_ids"][r, c + 1].tolist() == [301, 300, 301]


def test_an_answer_with_categories_after_its_label_is_one_answer_at_its_label():
    label_ids = [300, 301]
    examples = _examples(label_ids, [1, 0, 1])
    for i in (0, 2):  # "unsafe" then a trained line of categories (the last of them the label's id itself)
        examples.ids[i] = np.concatenate([examples.ids[i], [41, 42, 300]]).astype(np.int64)
        examples.trainable[i] = np.concatenate([examples.trainable[i], [True, True, True]])
    for packed, rows in ((False, [(0,), (1,), (2,)]), (True, [(0, 1, 2)])):
        batch = collate(rows, examples, pad_id=0, packed=packed)
        r, c, truth = answer_positions(batch.labels, label_ids)
        assert truth.tolist() == [1, 0, 1]
        assert batch.inputs["input_ids"][r, c + 1].tolist() == [301, 300, 301]


def test_one_forward_pass_gives_the_models_own_label_probabilities_and_their_metrics(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.train()
    label_ids, truth = [300, 301, 302], [0, 1, 2, 1, 0, 2, 2]
    examples = _examples(label_ids, truth)
    dist = Dist(0, 0, 1, torch.device("cpu"))
    result = evaluate_classifier(
        model, examples, label_token_ids=label_ids, label_names=NAMES, wanted=ALL, pad_id=0, batch_size=3, dist=dist
    )
    assert model.training  # back in the mode it was in
    with torch.no_grad():
        for i, ids in enumerate(examples.ids):  # each example alone, full logits
            logits = model(torch.as_tensor(ids)[None]).logits[0, -2]
            np.testing.assert_allclose(
                result.probabilities[i], label_probabilities(logits[None], label_ids)[0], atol=1e-5
            )
    assert result.truth.tolist() == truth
    assert result.metrics == classification_metrics(result.probabilities, result.truth, NAMES, ALL)
    fields = result.record_fields()
    assert set(fields) >= {
        "eval_accuracy",
        "eval_f1_macro",
        "eval_prauc_macro",
        "eval_classes",
        "eval_confusion_matrix",
    }
    assert fields["eval_classes"]["unsure"]["support"] == 3
    assert np.isfinite(result.label_loss) and result.label_loss > 0


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes no ``logits_to_keep`` (as some architectures' do not): all logits come back."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


@pytest.mark.parametrize("wrap", ["peft adapter", "no logits_to_keep"])
def test_a_wrapped_model_gives_the_probabilities_its_own_full_logits_give(wrap, tiny_model, tiny_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(base, tiny_adapter) if wrap == "peft adapter" else _NoLogitsToKeep(base)
    label_ids, truth = [300, 301, 302], [2, 0, 1, 1]
    examples = _examples(label_ids, truth, seed=3)
    result = evaluate_classifier(
        model, examples, label_token_ids=label_ids, label_names=NAMES, wanted=ALL, pad_id=0, batch_size=4,
        dist=Dist(0, 0, 1, torch.device("cpu")),
    )  # fmt: skip
    with torch.no_grad():
        for i, ids in enumerate(examples.ids):
            logits = model(input_ids=torch.as_tensor(ids)[None]).logits[0, -2]
            np.testing.assert_allclose(
                result.probabilities[i], label_probabilities(logits[None], label_ids)[0], atol=1e-5
            )


_RANK_SCRIPT = """
import os, sys, numpy as np, torch, torch.distributed as td
from transformers import AutoModelForCausalLM
from ftc.runtime.training.classification import evaluate_classifier
from ftc.runtime.training.distributed import Dist
from ftc.runtime.training.tokens import Examples

td.init_process_group("gloo")
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
data = np.load(sys.argv[2], allow_pickle=False)
ids = [data[f"ids{i}"] for i in range(int(data["n"]))]
trainable = [data[f"trainable{i}"] for i in range(int(data["n"]))]
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
result = evaluate_classifier(
    model, Examples(ids, trainable, list(range(len(ids)))), label_token_ids=[300, 301, 302],
    label_names=["safe", "unsafe", "unsure"], wanted=["accuracy", "f1", "prauc"], pad_id=0, batch_size=2,
    dist=Dist(rank, rank, world, torch.device("cpu")),
)
np.savez(f"{sys.argv[3]}-{rank}.npz", probs=result.probabilities, truth=result.truth, loss=result.label_loss)
td.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_each_take_a_share_and_every_rank_gets_every_examples_probabilities(tiny_model, tmp_path):
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    from support.servers import free_ports

    truth = [0, 1, 2, 1, 0, 2, 2]  # 7 examples, 2 per rank per forward: the last forward has a stand-in on rank 1
    examples = _examples([300, 301, 302], truth)
    arrays = {f"ids{i}": x for i, x in enumerate(examples.ids)} | {
        f"trainable{i}": t for i, t in enumerate(examples.trainable)
    }
    np.savez(tmp_path / "data.npz", n=len(truth), **arrays)
    (tmp_path / "rank.py").write_text(_RANK_SCRIPT)
    (port,) = free_ports(1)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(tmp_path / "rank.py"), str(tiny_model), str(tmp_path / "data.npz"),
         str(tmp_path / "out")],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    alone = evaluate_classifier(
        AutoModelForCausalLM.from_pretrained(tiny_model), examples, label_token_ids=[300, 301, 302], label_names=NAMES,
        wanted=ALL, pad_id=0, batch_size=4, dist=Dist(0, 0, 1, torch.device("cpu")),
    )  # fmt: skip
    for rank in (0, 1):
        got = np.load(tmp_path / f"out-{rank}.npz")
        np.testing.assert_allclose(got["probs"], alone.probabilities, atol=1e-6)
        assert got["truth"].tolist() == truth
        assert float(got["loss"]) == pytest.approx(alone.label_loss, abs=1e-6)
