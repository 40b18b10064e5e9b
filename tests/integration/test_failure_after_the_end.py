"""A process that fails after the run's last checkpoint was written: the run is complete, and `ftc run` says so
(the checkpoint named and verified as `ftc lineage verify` checks it) and exits 0, where it said the run failed; a
last checkpoint that does not verify leaves the failure the run's.

Nothing real fails on cue after the last checkpoint, so the failure is brought about there: with two processes,
rank 1 aborting at exit (SIGABRT, as a library thread alive at exit made one do). A failure before the run's
summary.json is written (replaced by a folder just before: ftc's own refusal to write through it) stays the run's."""

from __future__ import annotations

import os

import pytest

from ftc.errors import ExitCode, StorageFailed
from ftc.runtime.launch.outcome import finished_before
from ftc.spec.plan import read_plan

from conftest import ftc_process

WARNING = "warning: a process failed after the run's last checkpoint was written: "


def test_a_failure_before_the_summary_is_the_runs_though_every_checkpoint_is_written(job, ftc, tmp_path, monkeypatch):
    # summary.json (what a pipeline stage declares as its metrics) comes after the last checkpoint: a run that could
    # not write it did not finish, whatever its checkpoints hold
    from ftc.runtime.training import loop

    write_summary = loop.write_summary

    def blocked(plan, summary, **kwargs):
        (summary.output_dir / "summary.json").mkdir()
        write_summary(plan, summary, **kwargs)

    monkeypatch.setattr(loop, "write_summary", blocked)
    assert ftc("compile", job(output_dir="out"), "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert "summary.json is a folder" in r.err and WARNING not in r.err
    assert r.err.count("CPU threads: ") == 1


def test_a_last_checkpoint_that_does_not_verify_leaves_the_failure_the_runs(trained, tmp_path):
    out = trained(output_dir="out")
    plan = read_plan(tmp_path / "plan.json")
    error = StorageFailed("summary.json: cannot be written")
    said: list[str] = []
    assert finished_before(error, out, plan.plan_id, say=said.append)  # whole: the run stands
    assert said[0].startswith(WARNING + "summary.json: cannot be written\n")

    last = sorted((out / "checkpoints").iterdir())[-1]
    weights = next(last.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    said.clear()
    assert not finished_before(error, out, plan.plan_id, say=said.append)
    assert said[0].startswith(f"the run's last checkpoint {last} does not verify:")
    assert weights.name in said[0]
    assert not finished_before(error, out, "sha256:" + "0" * 64, say=said.append)  # flipped, or another plan's


def test_another_plans_or_an_unfinished_checkpoint_is_not_the_runs_end(trained, tmp_path):
    out = trained(output_dir="out")
    said: list[str] = []
    assert not finished_before(StorageFailed("x"), out, "sha256:" + "0" * 64, say=said.append)
    assert not finished_before(StorageFailed("x"), tmp_path / "nothing-here", "sha256:" + "0" * 64, say=said.append)
    assert said == []


#: rank 1 leaves as edb4c51's worker did under load: SIGABRT at exit, after everything was saved
ABORT_AT_EXIT = """
import os
_exit = os._exit
os._exit = lambda code: os.abort() if os.environ.get("RANK") == "1" else _exit(code)
"""


@pytest.mark.slow
def test_two_processes_one_aborting_after_the_last_checkpoint_exit_0_and_say_so(job, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(ABORT_AT_EXIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_NUM_THREADS", None)
    assert ftc_process("compile", job(output_dir="out", num_devices=2), "-o", tmp_path / "p.json").wait() == 0
    proc = ftc_process("run", tmp_path / "p.json", env=env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == ExitCode.OK, out
    assert "exitcode  : -6" in out  # torch.distributed.run's word for it: the abort happened
    assert out.count(WARNING) == 1
    assert "a training process failed (exit status 1)" in out.split(WARNING, 1)[1].splitlines()[0]
    last = sorted((tmp_path / "out" / "checkpoints").iterdir())[-1]
    assert f"its last checkpoint {last} verifies" in out
    # the launcher chose both processes' threads and said so once; torch.distributed.run's own default is unsaid
    assert out.count("CPU threads: ") == 1 and "2 processes per node)" in out
    assert "Setting OMP_NUM_THREADS" not in out
