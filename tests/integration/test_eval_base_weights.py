"""`ftc eval` of plain weights (a base model's folder, no lineage record) with the job spec that says how to prompt
them: the base's score is the one a run of that spec from those weights reports before training (exact match, and a
classifier's metrics), so a fine-tune has its baseline. The spec is checked as `ftc compile` checks it, the folder
as a run reads base weights; without --spec, the error says to pass it. Long evaluations show their progress on
stderr, in a run and in `ftc eval`, and stdout stays the JSON."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import metrics
from support.models import PROMPT_FORMAT, PROMPT_FORMATS, arithmetic_examples, write_jsonl

pytestmark = pytest.mark.slow

#: the spec's evaluation: answers generated, short (a random tiny model never stops on its own)
EVALUATION = {"generate": True, "max_new_tokens": 8}
#: a prompt format other than the tiny tokenizer's chat template: the spec's, not the folder's, prompts the base
GENERATION = {"prompt_format": PROMPT_FORMATS["llama2-system-in-user"], "stopping_sequences": ["</s>"]}
#: a classifier's: its answer right after the assistant's header, where the label is its own token
CLASSIFIER_GENERATION = {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}


def _eval(ftc, *args) -> dict:
    r = ftc("eval", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def _step_zero(out: Path) -> dict:
    first = metrics(out, "eval")[0]
    assert first["step"] == 0
    return first


@pytest.fixture
def answered(job, ftc, tiny_model, tmp_path) -> Path:
    """A spec whose validation answers are half the base's own greedy answers (as `ftc eval --spec` generated them)
    and half the arithmetic's, so exact match is 0.5 only where the base is prompted exactly as the run prompts it."""
    spec = job(evaluation=EVALUATION, generation_config=GENERATION, context_length=128, output_dir="out")
    first = _eval(ftc, tiny_model, "--spec", spec, "--data", tmp_path / "data/valid.jsonl", "-o", tmp_path / "a.jsonl")
    outputs = [json.loads(line)["output"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert first["exact_match"] == 0.0 and all(o.strip() for o in outputs)  # random weights: nothing right yet
    examples = arithmetic_examples(4, seed=2)
    for example, output in list(zip(examples, outputs))[::2]:
        example["messages"][-1]["content"] = output
    write_jsonl(tmp_path / "data/valid.jsonl", examples)
    return spec


def test_a_base_scored_with_its_spec_gets_the_exact_match_its_run_reports_before_training(
    answered, ftc, tiny_model, tmp_path
):
    scored = _eval(ftc, tiny_model, "--spec", answered, "--data", tmp_path / "data/valid.jsonl")
    assert scored["exact_match"] == 0.5 and scored["exact_matches"] == 2 and scored["max_new_tokens"] == 8
    assert scored["scored"] == "base weights, no lineage" and scored["record_id"] is None
    assert scored["model"] == str(tiny_model.resolve()) and scored["spec"] == str(answered)
    assert ftc("compile", answered, "-o", tmp_path / "plan.json").code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert scored["digest"] == plan["inputs"]["base_model"]["digest"]  # the weights the run starts from
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    assert _step_zero(tmp_path / "out")["exact_match"] == scored["exact_match"]


def _verdicts(n: int, seed: int) -> list[dict]:
    """Arithmetic checked by a classifier: the answer is 1 where the sum is right, 0 where it is not."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        total = a + b + (i % 2) * rng.randint(1, 9)
        out.append({"messages": [
            {"role": "user", "content": f"Is {a} + {b} = {total}?"},
            {"role": "assistant", "content": str(1 - i % 2)},
        ]})  # fmt: skip
    return out


def test_a_base_scored_with_a_classifier_spec_gets_the_metrics_its_run_reports_before_training(
    job, ftc, tiny_model, tmp_path
):
    write_jsonl(tmp_path / "data/check-train.jsonl", _verdicts(8, seed=1))
    write_jsonl(tmp_path / "data/check-valid.jsonl", _verdicts(12, seed=2))
    labels = {"label_tokens": ["0", "1"], "eval_metrics": ["accuracy", "f1", "prauc"]}
    spec = job(
        train_path="data/check-train.jsonl", valid_path="data/check-valid.jsonl",
        generation_config=CLASSIFIER_GENERATION, context_length=128, classifier_config=labels, output_dir="out",
    )  # fmt: skip
    scored = _eval(ftc, tiny_model, "--spec", spec, "--data", tmp_path / "data/check-valid.jsonl")
    assert scored["scored"] == "base weights, no lineage" and scored["examples"] == 12
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    before = _step_zero(tmp_path / "out")
    assert before["eval_accuracy"] == scored["accuracy"]
    assert before["eval_f1_macro"] == pytest.approx(scored["f1_macro"])
    assert before["eval_prauc_macro"] == pytest.approx(scored["prauc_macro"])  # ranks every probability
    assert before["eval_confusion_matrix"] == scored["confusion_matrix"]
    assert 0 < scored["prauc_macro"] < 1  # the base's probabilities differ between examples: not a tie everywhere


def test_plain_weights_without_a_spec_are_told_to_pass_one(ftc, tiny_model, tmp_path):
    write_jsonl(tmp_path / "valid.jsonl", arithmetic_examples(2))
    r = ftc("eval", tiny_model, "--data", tmp_path / "valid.jsonl", "-o", tmp_path / "rows.jsonl")
    assert r.code == ExitCode.USAGE and r.out == ""
    assert "no lineage.json here" in r.err and "fix: to score plain weights (a base model), pass --spec" in r.err
    assert not (tmp_path / "rows.jsonl").exists()


def test_a_checkpoint_with_a_spec_is_refused_since_its_own_plan_says_how_to_prompt_it(trained, job, ftc, tmp_path):
    out = trained()
    r = ftc("eval", out, "--spec", job(), "--data", tmp_path / "data/valid.jsonl")
    assert r.code == ExitCode.USAGE and "is a checkpoint, an export or a run written by ftc" in r.err
    assert "fix: drop --spec" in r.err


def test_the_spec_is_checked_as_compile_checks_it_every_problem_at_once(job, ftc, tiny_model, tmp_path):
    spec = job(learing_rate=1e-3, num_epochs=0)
    r = ftc("eval", tiny_model, "--spec", spec, "--data", tmp_path / "data/valid.jsonl")
    assert r.code == ExitCode.SPEC_INVALID and "learing_rate" in r.err and "num_epochs" in r.err


def test_the_weights_folder_is_read_as_a_run_reads_base_weights(job, ftc, tiny_model, tmp_path):
    coded = tmp_path / "coded"
    shutil.copytree(tiny_model, coded)
    (coded / "modeling_evil.py").write_text("import os\n")
    r = ftc("eval", coded, "--spec", job(), "--data", tmp_path / "data/valid.jsonl")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE and "a Python file: modeling_evil.py" in r.err
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    r = ftc("eval", pickled, "--spec", job(), "--data", tmp_path / "data/valid.jsonl")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE and "no *.safetensors weights" in r.err


@pytest.fixture
def every_update(monkeypatch):
    """Progress lines for every item (the tiny evaluations here end long before the few seconds a user waits)."""
    monkeypatch.setattr("ftc.runtime.training.progress.EVERY_S", 0.0)


def test_a_runs_evaluation_before_training_shows_its_progress(every_update, job, ftc, tmp_path):
    spec = job(evaluation=EVALUATION, eval_batch_size_per_device=1, output_dir="out")
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    before = r.err[: r.err.index("eval loss before training")]
    assert (
        "[ftc] evaluation (eval loss): batch 1/4, " in before
        and "[ftc] evaluation (eval loss): batch 4/4, took" in before
    )
    assert "[ftc] evaluation (exact match): answer 1/4, " in before and "so far, eta" in before
    assert "[ftc] evaluation (exact match): answer 4/4, took " in before


def test_ftc_eval_shows_its_progress_on_stderr_and_keeps_stdout_for_the_json(
    every_update, job, ftc, tiny_model, tmp_path
):
    spec = job(evaluation=EVALUATION)
    r = ftc("eval", tiny_model, "--spec", spec, "--data", tmp_path / "data/valid.jsonl")
    assert r.code == 0, r.err
    assert json.loads(r.out)["examples"] == 4
    assert "[ftc] evaluation (exact match): answer 3/4, " in r.err
    assert "[ftc] evaluation (exact match): answer 4/4, took " in r.err


def test_quick_evaluations_say_nothing(job, ftc, tiny_model, tmp_path):
    r = ftc("eval", tiny_model, "--spec", job(evaluation=EVALUATION), "--data", tmp_path / "data/valid.jsonl")
    assert r.code == 0, r.err
    assert "evaluation (" not in r.err


def test_outputs_inside_the_weights_folder_are_refused_before_anything_is_read(job, ftc, tiny_model, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    r = ftc("eval", weights, "--spec", job(), "--data", tmp_path / "data/valid.jsonl", "-o", weights / "rows.jsonl")
    assert r.code == ExitCode.USAGE and "-o" in r.err and not (weights / "rows.jsonl").exists()


def test_the_specs_rope_scaling_is_resolved_against_the_weights_as_compile_resolves_it(job, ftc, tiny_model, tmp_path):
    rope = {"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 7}
    r = ftc("eval", tiny_model, "--spec", job(rope_scaling=rope), "--data", tmp_path / "data/valid.jsonl")
    assert r.code == ExitCode.SPEC_INVALID and "rope_scaling.original_max_position_embeddings" in r.err
    assert "is not the model's native length" in r.err
    rope = {"rope_type": "linear", "factor": 2.0}
    spec = job(rope_scaling=rope, evaluation=EVALUATION)
    scored = _eval(ftc, tiny_model, "--spec", spec, "--data", tmp_path / "data/valid.jsonl", "-o", tmp_path / "r.jsonl")
    assert scored["examples"] == 4


def test_weights_or_data_changed_while_eval_reads_them_are_refused(job, ftc, tiny_model, tmp_path, monkeypatch):
    """Hashed, then read: the digests eval reports (the weights', the data's) must be of what it read."""
    import ftc.runtime.training.model as model
    import ftc.serving.generate as generate

    from support.writes import written_after

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    spec = job(evaluation=EVALUATION, generation_config=GENERATION, context_length=128)
    data, out = tmp_path / "data" / "valid.jsonl", tmp_path / "answers.jsonl"
    load = written_after(monkeypatch, model, "load_model", base / "config.json")
    r = ftc("eval", base, "--spec", spec, "--data", data, "-o", out)
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert f"{base}: it or its base weights changed while ftc read them" in r.err
    assert f"\n    {base / 'config.json'}\n" in r.err and not out.exists()

    monkeypatch.setattr(model, "load_model", load)
    written_after(monkeypatch, generate, "conversations", data)
    r = ftc("eval", base, "--spec", spec, "--data", data, "-o", out)
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert f"{data}: changed while ftc read it, after it was hashed" in r.err and not out.exists()
