"""`-o` of compile, eval, export and report is checked before any work: a device, a FIFO, a link, a folder where a
file goes, or a path inside the checkpoint (or data) the command reads is refused with exit 2, and nothing there
changes. (The checkpoints here are folders with a lineage.json: the refusal comes before anything reads them; a
checkpoint that were read would be refused with exit 12, not 2.)"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]}\n')
    return path


def _assert_refused(r, *parts: str) -> None:
    assert r.code == ExitCode.USAGE, (r.code, r.err)
    for part in parts:
        assert part in r.err, r.err
    assert "Traceback" not in r.err


def test_compile_never_replaces_dev_null(job, ftc):
    r = ftc("compile", job(), "-o", "/dev/null")
    _assert_refused(r, "-o /dev/null is a character device, not a regular file; ftc does not replace it")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_compile_never_replaces_a_fifo_nor_waits_on_it(job, ftc, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    started = time.monotonic()
    r = ftc("compile", job(), "-o", tmp_path / "fifo")
    _assert_refused(r, f"-o {tmp_path / 'fifo'} is a FIFO (named pipe), not a regular file")
    assert time.monotonic() - started < 10 and stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_compile_never_replaces_a_link_nor_writes_through_it(job, ftc, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("mine")
    (tmp_path / "plan.json").symlink_to(victim)
    r = ftc("compile", job(), "-o", tmp_path / "plan.json")
    _assert_refused(r, f"-o {tmp_path / 'plan.json'} is a symbolic link (to {victim})", "fix: give the real path")
    assert (tmp_path / "plan.json").is_symlink() and victim.read_text() == "mine"


def test_compile_refuses_a_folder_as_the_plan_and_the_default_plan_name_is_checked_too(job, ftc, tmp_path):
    (tmp_path / "plans").mkdir()
    r = ftc("compile", job(), "-o", tmp_path / "plans")
    _assert_refused(r, f"-o {tmp_path / 'plans'} is a folder, not a regular file")
    spec = job()
    spec.with_name("job.plan.json").symlink_to("/dev/null")  # the default -o beside the spec
    _assert_refused(ftc("compile", spec), "job.plan.json is a symbolic link (to /dev/null)")


def test_report_refuses_a_device_before_reading_the_checkpoint(ftc, run_folder):
    r = ftc("report", run_folder, "-o", "/dev/null")
    _assert_refused(r, "-o /dev/null is a character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_report_refuses_a_page_inside_any_checkpoint_of_the_run_it_reads(ftc, run_folder):
    best = run_folder / "checkpoints" / "step-000004"
    r = ftc("report", run_folder, "-o", run_folder / "best" / "report.html")
    _assert_refused(r, "report.html is inside", "which this command reads", "fix: write it outside that folder")
    r = ftc("report", run_folder, "-o", run_folder / "checkpoints" / "step-000002" / "report.html")
    _assert_refused(r, "is inside", "which this command reads")
    assert sorted(p.name for p in best.iterdir()) == ["lineage.json"]
    # beside the checkpoints, in the run's folder, a page is fine (this one then fails on the record: exit 12)
    r = ftc("report", run_folder, "-o", run_folder / "report.html")
    assert r.code == ExitCode.LINEAGE_BROKEN and "which this command reads" not in r.err


def test_eval_refuses_outputs_inside_the_checkpoint_or_over_its_data_before_loading_a_model(ftc, run_folder, data):
    checkpoint = run_folder / "checkpoints" / "step-000004"
    r = ftc("eval", checkpoint, "--data", data, "-o", checkpoint / "eval.jsonl")
    _assert_refused(r, f"-o {checkpoint / 'eval.jsonl'} is inside {checkpoint}, which this command reads")
    r = ftc("eval", checkpoint, "--data", data, "-o", data)
    _assert_refused(r, f"-o {data} is {data}, which this command reads", "fix: write it elsewhere")
    r = ftc("eval", checkpoint, "--data", data, "-o", "/dev/null")
    _assert_refused(r, "-o /dev/null is a character device")
    assert not (checkpoint / "eval.jsonl").exists() and data.read_text().startswith('{"messages"')


def test_eval_checks_its_default_output_too(ftc, run_folder, data, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("mine")
    data.with_name("test.eval.jsonl").symlink_to(victim)
    r = ftc("eval", run_folder, "--data", data)
    _assert_refused(r, "test.eval.jsonl is a symbolic link (to ")
    assert victim.read_text() == "mine"


def test_export_refuses_a_link_a_file_or_a_place_inside_the_checkpoint_before_any_merge(ftc, run_folder, tmp_path):
    checkpoint = run_folder / "checkpoints" / "step-000004"
    (tmp_path / "empty").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "empty")
    r = ftc("export", checkpoint, "-o", tmp_path / "linked")
    _assert_refused(r, f"-o {tmp_path / 'linked'} is a symbolic link (to {tmp_path / 'empty'})")
    (tmp_path / "file").write_text("x")
    _assert_refused(ftc("export", checkpoint, "-o", tmp_path / "file"), "is a file, not a folder")
    r = ftc("export", checkpoint, "-o", checkpoint / "export")
    _assert_refused(r, f"-o {checkpoint / 'export'} is inside {checkpoint}, which this command reads")
    r = ftc("export", run_folder, "-o", f"{checkpoint}/")  # the checkpoint itself (a folder, so -o's shape is fine)
    _assert_refused(r, f"-o {checkpoint} is {checkpoint}, which this command reads")
    assert sorted(p.name for p in checkpoint.iterdir()) == ["lineage.json"]
    assert list((tmp_path / "empty").iterdir()) == []


def test_an_output_reached_through_a_linked_folder_or_dots_is_still_inside(
    ftc, run_folder, data, tmp_path, monkeypatch
):
    checkpoint = run_folder / "checkpoints" / "step-000004"
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "results").symlink_to(checkpoint)
    monkeypatch.chdir(tmp_path / "work")
    r = ftc("eval", checkpoint, "--data", data, "-o", "results/eval.jsonl")
    _assert_refused(r, "-o results/eval.jsonl is inside", "which this command reads")
    r = ftc("report", checkpoint, "-o", "../runs/x/checkpoints/step-000002/../step-000004/r.html")
    _assert_refused(r, "is inside", "which this command reads")
    assert sorted(p.name for p in checkpoint.iterdir()) == ["lineage.json"]


def test_compile_checks_the_k8s_manifest_beside_the_plan_before_writing_either(job, ftc, tmp_path):
    (tmp_path / "plan.k8s.yaml").symlink_to("/dev/null")
    r = ftc("compile", job(), "-o", tmp_path / "plan.json", "--emit", "k8s", "--k8s-pvc", "data")
    _assert_refused(r, f"-o {tmp_path / 'plan.k8s.yaml'} is a symbolic link (to /dev/null)")
    assert not (tmp_path / "plan.json").exists() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_checkpoint_named_through_a_link_is_still_the_one_read(ftc, run_folder, data, tmp_path):
    checkpoint = run_folder / "checkpoints" / "step-000004"
    (tmp_path / "model").symlink_to(checkpoint)
    r = ftc("eval", tmp_path / "model", "--data", data, "-o", checkpoint / "eval.jsonl")
    _assert_refused(r, f"-o {checkpoint / 'eval.jsonl'} is inside {tmp_path / 'model'}, which this command reads")
    r = ftc("export", run_folder, "-o", run_folder / "checkpoints" / "step-000006")  # beside, but a checkpoint to be
    _assert_refused(r, "is inside", "which this command reads")
