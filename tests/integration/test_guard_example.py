"""examples/guard-classifier, the seed guide's guard classifier in two LoRA stages on a tiny model: stage 1 trains a
new adapter to answer a Llama-Guard-style prompt with `safe` or `unsafe`, stage 2 continues it. Both stages are
compiled and run from the example's own specs (in a copy, so the runs land in the test's folder), and what they
record is checked: the classifier's metrics at every evaluation, an accuracy above the majority class's share, stage
2 starting where stage 1 ended, and the lineage of the two checkpoints (diff and verify)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ftc.cli import main

from conftest import REPO, age, metrics

EXAMPLE = REPO / "examples" / "guard-classifier"
LABELS = ["safe", "unsafe"]
#: what every evaluation of the example records (its eval_metrics: prauc, accuracy, f1)
SCALARS = {
    "eval_loss",
    "eval_accuracy",
    "eval_f1_macro",
    "eval_precision_macro",
    "eval_recall_macro",
    "eval_prauc_macro",
}


def _answers(path: Path) -> list[str]:
    return [json.loads(line)["messages"][-1]["content"] for line in path.read_text().splitlines() if line.strip()]


def _majority_rate(path: Path) -> float:
    """The share of the most common label: the accuracy of always answering it."""
    counts = Counter(_answers(path))
    return max(counts.values()) / sum(counts.values())


@pytest.fixture(scope="module")
def guard_runs(tmp_path_factory) -> Path:
    """The example copied (its specs write to ../../runs/guard/), stage 1 then stage 2 compiled and run in it: the
    copy's root, whose runs/guard/ holds stage1/ and stage2/."""
    root = tmp_path_factory.mktemp("guard-example")
    example = root / "examples" / "guard-classifier"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("smollm2", "__pycache__"))
    age(example)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FTC_CACHE_DIR", str(root / "ftc-cache"))
        for stage in ("stage1", "stage2"):
            plan = root / f"{stage}.plan.json"
            assert main(["compile", str(example / f"{stage}.yaml"), "-o", str(plan)]) == 0
            assert main(["run", str(plan)]) == 0
    return root


def test_the_examples_data_is_a_guard_set_with_a_majority_class_of_60_percent():
    for name in ("train_1", "train_2", "valid"):
        answers = _answers(EXAMPLE / "data" / f"{name}.jsonl")
        assert set(answers) == set(LABELS), name
        assert _majority_rate(EXAMPLE / "data" / f"{name}.jsonl") == pytest.approx(0.6, abs=0.01), name
    first = json.loads((EXAMPLE / "data" / "valid.jsonl").read_text().splitlines()[0])["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]  # the seed guide's mapping
    assert first[0]["content"].startswith("[INST] Task: Check if there is unsafe content in 'User' messages")
    assert "User: " in first[0]["content"] and first[1]["content"] == ""


def test_the_committed_data_is_what_make_assets_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("guard_make_assets", EXAMPLE / "make_assets.py")
    make_assets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_assets)
    for name, (n, unsafe, seed) in make_assets.SPLITS.items():
        written = make_assets.guard_set(n, unsafe=unsafe, seed=seed, short=True)
        committed = [json.loads(line) for line in (EXAMPLE / "data" / f"{name}.jsonl").read_text().splitlines()]
        assert written == committed, name


def test_every_evaluation_of_both_stages_records_the_classifiers_metrics(guard_runs):
    for stage, epochs in (("stage1", 8), ("stage2", 4)):
        evals = metrics(guard_runs / "runs" / "guard" / stage, "eval")
        assert len(evals) == epochs + 1, stage  # before training, then after each epoch
        for record in evals:
            assert SCALARS <= set(record), (stage, record["step"])
            assert set(record["eval_classes"]) == set(LABELS)
            for label in LABELS:
                assert {"support", "precision", "recall", "f1", "prauc"} <= set(record["eval_classes"][label])
            assert sum(map(sum, record["eval_confusion_matrix"])) == 40


def test_lora_learns_the_labels_beyond_the_majority_class_in_stage_1_and_keeps_it_in_stage_2(guard_runs):
    majority = _majority_rate(EXAMPLE / "data" / "valid.jsonl")
    first, second = (metrics(guard_runs / "runs" / "guard" / stage, "eval") for stage in ("stage1", "stage2"))
    assert first[0]["eval_accuracy"] == pytest.approx(majority)  # untrained: both labels tie, the first is taken
    assert first[-1]["eval_accuracy"] > majority + 0.1, [e["eval_accuracy"] for e in first]
    assert second[-1]["eval_accuracy"] > majority + 0.1, [e["eval_accuracy"] for e in second]
    assert first[-1]["eval_prauc_macro"] > first[0]["eval_prauc_macro"]


def test_stage_2_starts_where_stage_1_ended(guard_runs):
    first, second = (metrics(guard_runs / "runs" / "guard" / stage, "eval") for stage in ("stage1", "stage2"))
    assert second[0]["eval_loss"] == pytest.approx(first[-1]["eval_loss"], rel=1e-4)
    assert second[0]["eval_accuracy"] == first[-1]["eval_accuracy"]  # the label rows came back with the adapter


def test_lineage_diff_of_the_two_stages_names_the_classifiers_metric_changes(guard_runs, ftc):
    runs = guard_runs / "runs" / "guard"
    r = ftc("lineage", "diff", runs / "stage1" / "latest", runs / "stage2" / "latest")
    assert r.code == 0, r.err
    first, second = metrics(runs / "stage1", "eval")[-1], metrics(runs / "stage2", "eval")[-1]
    assert f"eval_accuracy (last evaluation): {first['eval_accuracy']} -> {second['eval_accuracy']}" in r.out
    assert f"eval_f1_macro (last evaluation): {first['eval_f1_macro']} -> {second['eval_f1_macro']}" in r.out
    assert f"eval_prauc_macro (last evaluation): {first['eval_prauc_macro']}" in r.out
    assert 'plan.mode: "lora-new" -> "lora-continue"' in r.out
    for label in LABELS:
        assert f"f1 of {label} (last evaluation): " in r.out and f"prauc of {label} (last evaluation): " in r.out


def test_lineage_verify_of_stage_2_rehashes_stage_1s_adapter_and_the_base(guard_runs, ftc):
    r = ftc("lineage", "verify", guard_runs / "runs" / "guard" / "stage2" / "latest")
    assert r.code == 0, r.err
    assert "2 lineage record(s) in the chain recomputed" in r.out
    assert "re-hashed parent: adapter ../../runs/guard/stage1/latest" in r.out
    assert "re-hashed parent: base model model" in r.out


def _smollm2_prepare():
    """The SmolLM2 variant's prepare.py as a module (it loads examples/smollm2-arithmetic/prepare.py beside it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("guard_smollm2_prepare", EXAMPLE / "smollm2" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    return prepare


@pytest.fixture(scope="module")
def guard_smollm2(smollm2_example, tmp_path_factory) -> Path:
    """The SmolLM2 variant copied with its data written by its prepare.py, and the weights the SmolLM2 examples'
    shared conversion made (the same ``convert`` its prepare.py calls)."""

    root = tmp_path_factory.mktemp("guard-smollm2")
    example = root / "examples" / "guard-classifier"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("weights", "data", "__pycache__"))
    _smollm2_prepare().write_data(example / "smollm2" / "data")
    shutil.copytree(smollm2_example / "weights", example / "smollm2" / "weights")
    age(example)
    return example / "smollm2"


def test_the_smollm2_variants_committed_data_is_what_its_prepare_writes_in_llama_guard_2s_format(tmp_path):
    _smollm2_prepare().write_data(tmp_path)
    for name in ("train_1", "train_2", "valid"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (
            EXAMPLE / "smollm2" / "data" / f"{name}.jsonl"
        ).read_bytes()
        assert _majority_rate(tmp_path / f"{name}.jsonl") == 0.5
    prompt = json.loads((tmp_path / "valid.jsonl").read_text().splitlines()[0])["messages"][0]["content"]
    assert "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\n" in prompt and "S11: Sexual Content." in prompt
    assert "Provide your safety assessment for ONLY THE LAST User message" in prompt
    assert prompt.endswith("a comma-separated list of violated categories. [/INST]")


@pytest.mark.slow
def test_the_smollm2_variants_stage_1_compiles_against_the_converted_weights(guard_smollm2, ftc, tmp_path):
    r = ftc("compile", guard_smollm2 / "stage1.yaml", "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["mode"] == "lora-new" and plan["spec"]["task"] == "classification"
    assert plan["spec"]["classifier_config"]["label_tokens"] == LABELS
    assert plan["inputs"]["base_model"]["pinned"]


@pytest.mark.slow
def test_on_smollm2s_tokenizer_safe_is_kept_and_unsafe_added_each_the_one_trained_token(guard_smollm2, ftc):
    r = ftc("data", "inspect", guard_smollm2 / "stage1.yaml", "-n", "40", "--no-color")
    assert r.code == 0, r.err
    assert r.out.count(" tokens, 1 trained)") == 40
    assert "<|im_start|>assistant\n⟦safe⟧<|im_end|>" in r.out
    assert "<|im_start|>assistant\n⟦unsafe⟧<|im_end|>" in r.out
