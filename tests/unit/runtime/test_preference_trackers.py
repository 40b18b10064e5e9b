"""A preference run's evaluation reaches the trackers under ``eval/``: its reward accuracy, margin, rewards and
answer log-probabilities as MLflow, W&B and TensorBoard name them (one mapping for all three), written to real
TensorBoard event files and read back."""

from __future__ import annotations

import pytest

from ftc.runtime.training.progress import PREFERENCE_SCALARS
from ftc.runtime.training.trackers import open_tracker, tracker_metrics
from ftc.spec.plan import read_plan

RECORD = {"type": "eval", "step": 4, "epoch": 0, "eval_loss": 0.41, "eval_reward_accuracy": 0.75,
          "eval_reward_margin": 0.62, "eval_rewards_chosen": 0.2, "eval_rewards_rejected": -0.42,
          "eval_logps_chosen": -10.5, "eval_logps_rejected": -19.25}  # fmt: skip
NAMES = {"eval/loss": 0.41, "eval/reward_accuracy": 0.75, "eval/reward_margin": 0.62, "eval/rewards_chosen": 0.2,
         "eval/rewards_rejected": -0.42, "eval/logps_chosen": -10.5, "eval/logps_rejected": -19.25}  # fmt: skip


def test_trackers_get_the_preference_scalars_under_eval():
    assert tracker_metrics(RECORD) == pytest.approx(NAMES)
    assert {f"eval/{key[5:]}" for key in PREFERENCE_SCALARS} == set(NAMES) - {"eval/loss"}  # every one of them


def test_a_preference_evaluation_is_written_to_tensorboard_under_eval(job, ftc, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = ftc("compile", job(logger={"provider": "tensorboard"}, output_dir="out"), "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = read_plan(tmp_path / "plan.json")
    out = tmp_path / "out"
    out.mkdir()
    tracker = open_tracker(plan, main=True)
    tracker.start(plan, out)
    tracker.log(RECORD)
    tracker.finish("FINISHED", [])
    assert not tracker.broken
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    found = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert found == {name: [(4, pytest.approx(value))] for name, value in NAMES.items()}
