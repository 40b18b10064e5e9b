"""A classifier's evaluation as it is recorded: its fields in an evaluation record, the run's notes, summary.json,
the trackers' metrics and the lineage record's results; a record without them (sft's) is written as before."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from ftc.errors import ExitCode
from ftc.runtime.training.classification import Classified, classification_metrics
from ftc.runtime.training.summary import RunSummary, eval_table, eval_text, write_summary
from ftc.runtime.training.trackers import tracker_metrics
from ftc.spec import lineage_schema

from support.records import write_checkpoint

NAMES = ["safe", "unsafe"]


def _record(step: int, probs, truth, wanted=("accuracy", "f1", "prauc")) -> dict:
    metrics = classification_metrics(np.asarray(probs), np.asarray(truth), NAMES, list(wanted))
    classified = Classified(np.asarray(probs), np.asarray(truth), 0.5, metrics)
    return {
        "type": "eval",
        "step": step,
        "epoch": 0,
        "eval_loss": 0.25,
        "train_loss": None,
        **classified.record_fields(),
    }


def _evals_schema() -> dict:
    schema = lineage_schema()
    return {"$defs": schema["$defs"], **schema["properties"]["results"]["properties"]["evals"]}


def test_an_evaluation_record_carries_the_wanted_metrics_per_class_and_the_confusion_matrix():
    record = _record(4, [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]], [0, 1, 1])
    assert record["eval_accuracy"] == pytest.approx(2 / 3)
    assert {"eval_f1_macro", "eval_prauc_macro", "eval_precision_macro", "eval_recall_macro"} <= set(record)
    assert record["eval_classes"]["unsafe"] == {
        "support": 2, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "prauc": 1.0,
    }  # fmt: skip
    assert record["eval_confusion_matrix"] == [[1, 0], [1, 1]]
    jsonschema.validate([record], _evals_schema(), cls=jsonschema.Draft202012Validator)
    only = _record(4, [[0.9, 0.1], [0.4, 0.6]], [0, 1], wanted=("accuracy",))
    assert "eval_f1_macro" not in only and only["eval_classes"]["safe"] == {"support": 1}


def test_a_class_missing_from_the_validation_data_is_recorded_as_null_and_the_schema_takes_it():
    record = _record(0, [[0.9, 0.1], [0.8, 0.2]], [0, 0])
    assert record["eval_classes"]["unsafe"] == {
        "support": 0,
        "precision": None,
        "recall": None,
        "f1": None,
        "prauc": None,
    }
    jsonschema.validate([record], _evals_schema(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "bad",
    [{"eval_accuracy": 1.5}, {"eval_f1_macro": -0.1}, {"eval_confusion_matrix": [[-1]]},
     {"eval_classes": {"safe": {"support": 1, "f1": 2.0}}}, {"eval_classes": {"safe": {"f1": 0.5}}}],
)  # fmt: skip
def test_the_lineage_schema_bounds_a_classifiers_metrics(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"step": 1, **bad}], _evals_schema(), cls=jsonschema.Draft202012Validator)


def test_the_notes_show_accuracy_macro_f1_and_pr_auc_compactly():
    record = _record(4, [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]], [0, 1, 1])
    assert eval_text(record) == "eval loss 0.2500, accuracy 0.667, macro F1 0.667, macro PR-AUC 1.000"
    assert eval_table([record]) == [
        "  step      4  train loss    n/a  eval loss 0.2500, accuracy 0.667, macro F1 0.667, macro PR-AUC 1.000"
    ]
    sft = {"type": "eval", "step": 4, "epoch": 0, "eval_loss": 0.25, "train_loss": 1.0, "exact_match": 0.5}
    assert eval_text(sft) == "eval loss 0.2500, exact match 0.500"


def test_trackers_get_the_scalar_metrics_under_eval():
    record = _record(4, [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]], [0, 1, 1])
    got = tracker_metrics(record)
    assert set(got) == {"eval/loss", "eval/accuracy", "eval/precision_macro", "eval/recall_macro", "eval/f1_macro",
                        "eval/prauc_macro"}  # fmt: skip
    assert got["eval/accuracy"] == pytest.approx(2 / 3)


def _summary(tmp_path, evals) -> dict:
    plan = SimpleNamespace(plan_id="sha256:" + "0" * 64)
    write_summary(plan, RunSummary(tmp_path, [], None, evals, {}), steps=8, tokens=100, train_loss=0.5)
    return json.loads((tmp_path / "summary.json").read_text())


def test_summary_json_holds_each_evaluations_scalars_and_the_last_per_class_values(tmp_path):
    first = _record(0, [[0.6, 0.4], [0.6, 0.4]], [0, 1])
    last = _record(8, [[0.9, 0.1], [0.2, 0.8]], [0, 1])
    data = _summary(tmp_path, [first, last])
    assert [e["eval_accuracy"] for e in data["evals"]] == [0.5, 1.0]
    assert "eval_classes" not in data["evals"][0]
    assert data["eval_accuracy"] == data["eval_f1_macro"] == data["eval_prauc_macro"] == 1.0
    assert data["eval_confusion_matrix"] == [[1, 0], [0, 1]]
    assert data["eval_classes"]["unsafe"]["support"] == 1


def test_an_sft_runs_summary_json_is_written_as_before(tmp_path):
    evals = [
        {"type": "eval", "step": 0, "epoch": 0, "eval_loss": 1.5, "train_loss": None, "exact_match": 0.0},
        {"type": "eval", "step": 8, "epoch": 1, "eval_loss": 1.25, "train_loss": 1.0, "exact_match": 0.5},
    ]
    _summary(tmp_path, evals)
    assert (tmp_path / "summary.json").read_text() == json.dumps(
        {
            "plan_id": "sha256:" + "0" * 64, "steps": 8, "tokens_trained": 100, "train_loss": 0.5, "eval_loss": 1.25,
            "best_eval_loss": 1.25,
            "evals": [{"step": 0, "epoch": 0, "eval_loss": 1.5, "exact_match": 0.0},
                      {"step": 8, "epoch": 1, "eval_loss": 1.25, "exact_match": 0.5}],
            "exact_match": 0.5,
        },
        indent=2,
    ) + "\n"  # fmt: skip


def test_lineage_diff_names_the_classifier_metrics_that_changed_between_two_stages(ftc, tmp_path):
    stage1 = _record(4, [[0.6, 0.4], [0.7, 0.3]], [0, 1])  # answers safe to everything
    stage2 = _record(4, [[0.9, 0.1], [0.2, 0.8]], [0, 1])
    for folder, record in (("a", stage1), ("b", stage2)):
        write_checkpoint(tmp_path / folder, results={"evals": [record]})
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0, r.err
    assert "eval_accuracy (last evaluation): 0.5 -> 1.0" in r.out
    assert "eval_f1_macro (last evaluation): 0.3333333333333333 -> 1.0" in r.out
    assert "f1 of unsafe (last evaluation): 0.0 -> 1.0" in r.out
    assert "eval_prauc_macro (last evaluation): 0.5 -> 1.0" in r.out
    assert "support of" not in r.out and "eval_loss" not in r.out  # the same in both
    same = ftc("lineage", "diff", tmp_path / "b", tmp_path / "b")
    assert "the histories are the same" in same.out


def test_lineage_diff_refuses_a_record_whose_classifier_metrics_are_out_of_shape(ftc, tmp_path):
    write_checkpoint(tmp_path / "a")
    write_checkpoint(tmp_path / "b", results={"evals": [{"step": 4, "eval_classes": ["safe"]}]})
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "not a lineage record: $.results.evals[0].eval_classes: ['safe'] is not of type 'object'" in r.err
