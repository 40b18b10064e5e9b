"""An epoch's steps collated one ahead, in a thread, while the current one trains."""

from __future__ import annotations

import threading

import pytest

from ftc.runtime.training.step import Prefetched


def test_each_step_is_collated_once_and_the_next_one_ahead_in_a_thread():
    calls = []

    def collate(rows):
        calls.append((rows, threading.current_thread().name))
        return [f"batch of {rows}"]

    steps = Prefetched(["a", "b", "c"], collate)
    assert len(steps) == 3
    assert [steps[i] for i in range(3)] == [["batch of a"], ["batch of b"], ["batch of c"]]
    assert [rows for rows, _ in calls] == ["a", "b", "c"]
    assert calls[0][1] == threading.current_thread().name  # the first is waited for
    assert all(name.startswith("ftc-collate") for _, name in calls[1:])


def test_a_resumed_epoch_starts_at_its_step_and_a_step_asked_out_of_order_is_collated_then():
    calls = []
    steps = Prefetched(list(range(6)), lambda rows: calls.append(rows) or [rows])
    assert steps[3] == [3] and steps[4] == [4]
    assert steps[1] == [1]  # step 5 was collated ahead and is dropped
    assert calls[:2] == [3, 4] and 1 in calls


def test_a_failure_while_collating_ahead_is_raised_when_its_step_is_asked():
    def collate(rows):
        if rows == "bad":
            raise ValueError("no such example")
        return [rows]

    steps = Prefetched(["good", "bad"], collate)
    assert steps[0] == ["good"]
    with pytest.raises(ValueError, match="no such example"):
        steps[1]
