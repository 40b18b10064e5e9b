"""The CPU threads each process computes with (``ftc.runtime.training.threads``): OMP_NUM_THREADS when the user set
it; else the cores this process may use, less those other work keeps busy, shared among the node's processes; and
other work on a core is measured, not guessed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ftc.runtime.training.threads import busy_cores, choose_cpu_threads, cpu_quota, use_cpu_threads


def idle(cpus: set[int]) -> float:
    return 0.0


def choose(processes: int, *, cores: int = 2, busy: float = 0.0, quota: float | None = None, omp: str | None = None):
    environ = {} if omp is None else {"OMP_NUM_THREADS": omp}
    return choose_cpu_threads(
        processes, environ=environ, cpus=set(range(cores)), quota=quota or float(cores), busy=lambda cpus: busy
    )


def test_the_cores_are_shared_among_the_nodes_processes():
    assert choose(1, cores=2).line() == "CPU threads: 2 per process (2 cores, 1 process per node)"
    assert choose(2, cores=2).line() == "CPU threads: 1 per process (2 cores, 2 processes per node)"
    assert choose(3, cores=16).threads == 5
    assert choose(4, cores=2).threads == 1  # more processes than cores: one each, never none


def test_cores_other_work_keeps_busy_are_left_to_it():
    one_busy = choose(1, cores=2, busy=0.97)
    assert one_busy.threads == 1
    assert one_busy.line() == "CPU threads: 1 per process (2 cores, 1 of them busy with other work, 1 process per node)"
    assert choose(1, cores=2, busy=0.6).threads == 1  # half busy counts: too many threads cost more than too few
    assert choose(1, cores=2, busy=0.3).threads == 2
    assert choose(1, cores=2, busy=7.0).threads == 1  # an overloaded machine: one thread, never fewer
    assert choose(2, cores=16, busy=4.2).threads == 6


def test_a_cpu_quota_below_the_cores_caps_them():
    capped = choose(1, cores=8, quota=2.5)
    assert capped.threads == 2
    assert capped.line() == "CPU threads: 2 per process (2 cores by the CPU quota, 1 process per node)"
    assert choose(1, cores=2, quota=0.5).threads == 1


def test_a_quota_caps_the_free_host_cores_and_busy_host_cores_do_not_eat_the_quota():
    # a pod of 8 CPUs on a 64-core host where other pods keep 40 busy: its 8, not 1
    assert choose(1, cores=64, quota=8, busy=40).threads == 8
    # where other work leaves fewer cores than the quota, what it leaves
    assert choose(2, cores=64, quota=32, busy=52).threads == 6


@pytest.mark.parametrize(("value", "threads"), [("1", 1), ("3", 3), ("4,2", 4), (" 6 ", 6)])
def test_omp_num_threads_set_by_the_user_decides(value, threads):
    choice = choose(2, cores=2, busy=2.0, omp=value)
    assert choice.threads == threads and choice.from_environment
    assert choice.line() == f"CPU threads: {threads} per process (OMP_NUM_THREADS={threads})"


@pytest.mark.parametrize("value", ["", "0", "-2", "many"])
def test_an_omp_num_threads_that_is_no_count_is_not_obeyed(value):
    choice = choose(1, cores=2, omp=value)
    assert choice.threads == 2 and not choice.from_environment


def test_the_environment_is_this_processs_unless_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_cpu_threads(1, busy=idle).line() == "CPU threads: 3 per process (OMP_NUM_THREADS=3)"
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    expected = min(cores, max(1, int(quota))) if quota is not None else cores
    assert choose_cpu_threads(1, busy=idle).threads == expected


def test_a_cgroup_quota_is_read_from_cpu_max(tmp_path):
    assert cpu_quota(tmp_path) is None  # no cgroup file: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5


def test_a_core_another_process_keeps_busy_is_measured_busy():
    cpu = min(os.sched_getaffinity(0))
    spinner = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        busy_cores({cpu}, seconds=0.3)  # the spinner settled on its core
        assert busy_cores({cpu}, seconds=0.5) > 0.8
    finally:
        spinner.kill()
        spinner.wait()


def test_use_cpu_threads_applies_the_choice_to_torch_and_says_it(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    said: list[str] = []
    was = torch.get_num_threads()
    try:
        choice = use_cpu_threads(1, said.append)
        assert torch.get_num_threads() == 1 == choice.threads
        assert said == ["CPU threads: 1 per process (OMP_NUM_THREADS=1)"]
    finally:
        torch.set_num_threads(was)
