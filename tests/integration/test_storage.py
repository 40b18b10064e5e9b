"""Output storage that fails: a read-only or a full disk (real tmpfs mounts) is a clear error with its own exit code,
earlier checkpoints stay intact, the partial one goes, and the run continues once there is room."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import ftc_process, spec_in_s3

TWO_EPOCHS = dict(lora_config=None, num_epochs=2, train_batch_size_per_device=4)  # two checkpoints of ~2.9 MB


@pytest.fixture
def mounted(tmp_path):
    """``mounted(options, name="output")`` mounts a tmpfs with ``options`` at tmp_path/name (unmounted after the
    test)."""
    made: list[Path] = []

    def mount(options: str, name: str = "output") -> Path:
        target = tmp_path / name
        target.mkdir(exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
        made.append(target)
        return target

    yield mount
    for path in made:  # lazily where a file of it is still open in this process (the caches ftc keeps open)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_output_folder_is_refused_before_training(mounted, job, ftc, tmp_path):
    assert ftc("compile", job(**TWO_EPOCHS), "-o", tmp_path / "p.json").code == 0
    out = mounted("ro,size=16m")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert f"{out} is on a read-only file system: creating the output folder's lock failed" in r.err
    assert "fix: choose an output_dir on a writable disk" in r.err
    assert "Traceback" not in r.err


def test_a_full_disk_keeps_earlier_checkpoints_and_the_run_continues_once_there_is_room(mounted, job, ftc, tmp_path):
    assert ftc("compile", job(**TWO_EPOCHS), "-o", tmp_path / "p.json").code == 0
    out = mounted("size=4m")  # room for the first checkpoint, not the second
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert f"{out} is on a full disk (or over its quota): writing the run's output failed" in r.err
    assert "fix: free space there, then continue with `ftc run PLAN --resume`" in r.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]  # the partial one is gone
    assert ftc("lineage", "verify", out / "checkpoints" / "step-000004").code == 0
    subprocess.run(["mount", "-o", "remount,size=32m", str(out)], check=True)
    r = ftc("run", tmp_path / "p.json", "--resume")
    assert r.code == 0, r.err
    assert "resuming from step-000004" in r.err
    assert ftc("lineage", "verify", out).code == 0


def test_a_full_disk_under_two_processes_is_the_same_storage_error(mounted, job, tmp_path):
    """The note that carries rank 0's exit code to the launcher is not written to the full disk itself."""
    spec = job(**TWO_EPOCHS, num_devices=2)
    assert ftc_process("compile", spec, "-o", tmp_path / "p.json").wait(timeout=120) == 0
    out = mounted("size=4m")
    proc = ftc_process("run", tmp_path / "p.json")
    said, _ = proc.communicate(timeout=600)
    assert proc.returncode == ExitCode.STORAGE_FAILED, said[-3000:]
    assert f"{out} is on a full disk (or over its quota)" in said
    assert not list((out / "checkpoints").glob("*.partial*"))
    # rank 0 told the launcher its exit code through a file outside the full disk, not in it
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".ftc-lock-node0"]


def test_a_read_only_cache_is_a_storage_error_that_names_the_cache(mounted, s3, job, ftc, tmp_path, tiny_model):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    cache = mounted("ro,size=16m", "cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FTC_CACHE_DIR", str(cache))
        r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert f"the cache {cache} is on a read-only file system: storing s3://{s3.bucket}/" in r.err
    assert "fix: set FTC_CACHE_DIR to a folder on a writable disk" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "p.json").exists()
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0  # with a writable cache


def test_a_full_cache_keeps_no_partial_download_and_the_run_goes_on_once_there_is_room(
    mounted, s3, job, ftc, tmp_path, tiny_model, monkeypatch
):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    cache = mounted("size=320k", "cache")  # room for the JSON files compile reads, not for the weights (548 KiB)
    monkeypatch.setenv("FTC_CACHE_DIR", str(cache))
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.STORAGE_FAILED, r.err
    assert f"the cache {cache} is on a full disk (or over its quota): storing s3://{s3.bucket}/weights/" in r.err
    assert "fix: free space there (or set FTC_CACHE_DIR to a larger disk), then run again" in r.err
    assert not [p for p in (cache / "partial").iterdir() if p.stat().st_size]  # no partial download kept
    assert not (tmp_path / "output" / "checkpoints").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
