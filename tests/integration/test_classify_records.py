"""A classifier's evaluations as a run records them, end to end on a tiny model: each evaluation's metrics (the ones
eval_metrics names) in metrics.jsonl, the run's notes, summary.json and every checkpoint's lineage record (valid
against its schema)."""

from __future__ import annotations

import json

import jsonschema

from ftc.spec import lineage_schema

from conftest import metrics
from support.guard import LABELS, guard_examples
from support.models import write_jsonl


def test_a_classifiers_evaluations_are_recorded_in_metrics_notes_summary_and_lineage(job, ftc, tmp_path):
    write_jsonl(tmp_path / "guard-train.jsonl", guard_examples(16, seed=1))
    write_jsonl(tmp_path / "guard-valid.jsonl", guard_examples(6, seed=2))
    spec = job(
        name="guard.yaml", classifier_config={"label_tokens": LABELS, "eval_metrics": ["accuracy", "f1"]},
        train_path="guard-train.jsonl", valid_path="guard-valid.jsonl", num_epochs=1, train_batch_size_per_device=8,
        output_dir="guard",
    )  # fmt: skip
    assert ftc("compile", spec, "-o", tmp_path / "guard.plan.json").code == 0
    r = ftc("run", tmp_path / "guard.plan.json")
    assert r.code == 0, r.err
    out = tmp_path / "guard"
    evals = metrics(out, "eval")
    assert [e["step"] for e in evals] == [0, 2]  # before training, and at the end of the epoch
    for e in evals:
        assert {"eval_accuracy", "eval_f1_macro", "eval_precision_macro", "eval_recall_macro"} <= set(e)
        assert "eval_prauc_macro" not in e  # not named in eval_metrics
        assert sum(e["eval_classes"][label]["support"] for label in LABELS) == 6
        assert sum(map(sum, e["eval_confusion_matrix"])) == 6
    last = evals[-1]
    assert f"accuracy {last['eval_accuracy']:.3f}, macro F1 {last['eval_f1_macro']:.3f}" in r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_accuracy"] == last["eval_accuracy"] and summary["eval_classes"] == last["eval_classes"]
    assert [e["eval_f1_macro"] for e in summary["evals"]] == [e["eval_f1_macro"] for e in evals]
    record = json.loads((out / "latest" / "lineage.json").read_text())
    jsonschema.validate(record, lineage_schema(), cls=jsonschema.Draft202012Validator)
    recorded = record["results"]["evals"][-1]
    assert recorded["eval_confusion_matrix"] == last["eval_confusion_matrix"]
    assert recorded["eval_f1_macro"] == last["eval_f1_macro"]
