"""``ftc lineage show`` carries every score the records hold at each checkpoint's evaluation: beside the eval loss
and exact match, a classifier's macro shares and a preference model's reward accuracy, rewards and
log-probabilities, in text, JSON, Mermaid and dot."""

from __future__ import annotations

import json

from ftc.lineage.show import SCORES
from ftc.spec import lineage_schema

from support.records import record_for, write_checkpoint

CLASSIFIER = {"eval_accuracy": 0.9, "eval_precision_macro": 0.8958, "eval_recall_macro": 0.8958,
              "eval_f1_macro": 0.8958, "eval_prauc_macro": 0.9733}  # fmt: skip
PREFERENCE = {"eval_reward_accuracy": 1.0, "eval_reward_margin": 0.75, "eval_rewards_chosen": 0.5,
              "eval_rewards_rejected": -0.25, "eval_logps_chosen": -10.0, "eval_logps_rejected": -12.25}  # fmt: skip


def _results(step: int, scores: dict) -> dict:
    return {"step": step, "total_steps": step, "eval_loss": 0.5, "evals": [{"step": step, "eval_loss": 0.5, **scores}]}


def test_show_gives_a_classifiers_and_a_preference_models_scores_of_each_checkpoint(ftc, tmp_path):
    stage1 = record_for(tmp_path / "a", checkpoint={"name": "stage1"}, results=_results(4, CLASSIFIER))
    (tmp_path / "b").mkdir()
    write_checkpoint(tmp_path / "b", parent=stage1, results=_results(8, PREFERENCE))
    r = ftc("lineage", "show", tmp_path / "b")
    assert r.code == 0, r.err
    first, second = r.out.splitlines()[:2]
    assert (
        "eval loss 0.5000  reward accuracy 1.000  reward margin 0.7500  chosen reward 0.5000  rejected reward "
        "-0.2500  chosen log-probability -10.0000  rejected log-probability -12.2500"
    ) in first
    assert (
        "eval loss 0.5000  accuracy 0.900  macro precision 0.896  macro recall 0.896  macro F1 0.896  macro PR-AUC "
        "0.973"
    ) in second
    nodes = json.loads(ftc("lineage", "show", tmp_path / "b", "--format", "json").out)["chain"]
    assert nodes[0]["metrics"] == PREFERENCE and nodes[1]["metrics"] == CLASSIFIER
    mermaid = ftc("lineage", "show", tmp_path / "b", "--format", "mermaid").out
    assert "eval loss 0.5000<br/>accuracy 0.900<br/>macro precision 0.896" in mermaid
    dot = ftc("lineage", "show", tmp_path / "b", "--format", "dot").out
    assert "reward accuracy 1.000\\nreward margin 0.7500" in dot


def test_show_gives_no_scores_of_an_earlier_evaluation_nor_of_a_run_without_them(ftc, tmp_path):
    results = _results(4, {})
    results["evals"].insert(0, {"step": 2, "eval_loss": 0.7, **CLASSIFIER})
    write_checkpoint(tmp_path / "a", results=results)
    r = ftc("lineage", "show", tmp_path / "a")
    assert r.code == 0 and "eval loss 0.5000" in r.out and "accuracy" not in r.out
    nodes = json.loads(ftc("lineage", "show", tmp_path / "a", "--format", "json").out)["chain"]
    assert nodes[0]["metrics"] == {}


def test_show_names_every_score_the_lineage_schema_gives_an_evaluation():
    fields = lineage_schema()["properties"]["results"]["properties"]["evals"]["items"]["properties"]
    scalar = {
        key
        for key, field in fields.items()
        if field.get("$ref") == "#/$defs/share"
        or "number" in ([field.get("type")] if isinstance(field.get("type"), str) else field.get("type", []))
    }
    assert scalar - {"eval_loss", "train_loss", "exact_match"} == {key for key, _ in SCORES}
