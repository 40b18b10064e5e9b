"""``ftc lineage diff`` and ``show`` of preference runs' checkpoints: the reward metrics that changed between two
histories' last evaluations, whether the reference log-probabilities each dataset pins differ or are the same, and
each dataset line naming its pin; records without them read as before."""

from __future__ import annotations

import json

from support.records import DIGEST, write_checkpoint

ONE, TWO = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32


def _datasets(train: str | None, valid: str | None = None) -> list[dict]:
    out = []
    for role, reference in (("train", train), ("valid", valid)):
        entry = {"role": role, "source": {"source": "local", "kind": "file", "location": f"../data/{role}.jsonl"},
                 "sha256": DIGEST, "examples": 8, "examples_used": 8, "examples_skipped": 0}  # fmt: skip
        out.append({**entry, "reference_logprobs": {"digest": reference, "pairs": 8}} if reference else entry)
    return out


def _evals(accuracy: float, chosen: float, rejected: float) -> list[dict]:
    last = {"step": 4, "eval_loss": 1.5, "eval_reward_accuracy": accuracy, "eval_reward_margin": chosen - rejected,
            "eval_rewards_chosen": chosen, "eval_rewards_rejected": rejected, "eval_logps_chosen": -10.0,
            "eval_logps_rejected": -12.0 + rejected}  # fmt: skip
    return [last]


def _checkpoint(folder, train=ONE, valid=ONE, evals=None):
    results = {"evals": evals if evals is not None else _evals(0.5, 0.25, 0.0)}
    return write_checkpoint(folder, datasets=_datasets(train, valid), results=results)


def test_lineage_diff_names_the_reward_metrics_that_changed_and_a_different_reference(ftc, tmp_path):
    _checkpoint(tmp_path / "a", evals=_evals(0.5, 0.25, 0.0))
    _checkpoint(tmp_path / "b", train=TWO, evals=_evals(1.0, 0.5, -0.25))
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0, r.err
    assert "inputs: 1 difference(s)" in r.out
    assert f"  reference log-probs of train: {ONE} (8 pairs) -> {TWO} (8 pairs)\n" in r.out
    assert f"  reference log-probs of valid: the same in both, {ONE} (8 pairs)\n" in r.out
    for line in (
        "eval_reward_accuracy (last evaluation): 0.5 -> 1.0",
        "eval_reward_margin (last evaluation): 0.25 -> 0.75",
        "eval_rewards_chosen (last evaluation): 0.25 -> 0.5",
        "eval_rewards_rejected (last evaluation): 0.0 -> -0.25",
        "eval_logps_rejected (last evaluation): -12.0 -> -12.25",
    ):
        assert f"  {line}\n" in r.out, line
    assert "eval_logps_chosen" not in r.out  # the same in both
    assert "results: 5 difference(s)" in r.out
    found = json.loads(ftc("lineage", "diff", tmp_path / "a", tmp_path / "b", "--format", "json").out)
    assert found["sections"]["inputs"] == [f"reference log-probs of train: {ONE} (8 pairs) -> {TWO} (8 pairs)"]
    assert found["same"]["inputs"] == [f"reference log-probs of valid: the same in both, {ONE} (8 pairs)"]


def test_lineage_diff_says_the_reference_is_the_same_without_counting_it_as_a_difference(ftc, tmp_path):
    _checkpoint(tmp_path / "a")
    _checkpoint(tmp_path / "b")
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0, r.err
    assert "the histories are the same" in r.out
    assert f"  reference log-probs of train: the same in both, {ONE} (8 pairs)" in r.out
    assert f"  reference log-probs of valid: the same in both, {ONE} (8 pairs)" in r.out
    found = json.loads(ftc("lineage", "diff", tmp_path / "a", tmp_path / "b", "--format", "json").out)
    assert found["identical"] is True and len(found["same"]["inputs"]) == 2


def test_lineage_diff_of_a_preference_run_and_a_chat_run_says_which_pins_reference_numbers(ftc, tmp_path):
    write_checkpoint(tmp_path / "sft")
    _checkpoint(tmp_path / "dpo", valid=None)
    r = ftc("lineage", "diff", tmp_path / "sft", tmp_path / "dpo")
    assert r.code == 0, r.err
    assert f"  reference log-probs of train: only in b ({ONE} (8 pairs))\n" in r.out
    assert "eval_reward_accuracy (last evaluation): null -> 0.5" in r.out
    plain = ftc("lineage", "diff", tmp_path / "sft", tmp_path / "sft")
    assert "reference log-probs" not in plain.out and "eval_reward" not in plain.out


def test_lineage_show_names_each_datasets_pinned_reference_log_probs(ftc, tmp_path):
    _checkpoint(tmp_path / "dpo", valid=TWO)
    r = ftc("lineage", "show", tmp_path / "dpo")
    assert r.code == 0, r.err
    assert (
        f"data train ../data/train.jsonl {DIGEST[:19]}… (8 examples; reference log-probs {ONE[:19]}… of 8 pairs)"
        in r.out
    )
    assert f"valid ../data/valid.jsonl {DIGEST[:19]}… (8 examples; reference log-probs {TWO[:19]}… of 8 pairs)" in r.out
    write_checkpoint(tmp_path / "sft")
    plain = ftc("lineage", "show", tmp_path / "sft")
    assert plain.code == 0 and f"data train ../data/train.jsonl {DIGEST[:19]}… (4 examples)" in plain.out
    assert "reference log-probs" not in plain.out
