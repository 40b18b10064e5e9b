"""`ftc reproduce` options that would make its verdict meaningless are refused before anything is read."""

from __future__ import annotations

import pytest

from ftc.errors import ExitCode


@pytest.mark.parametrize("option, value", [("--rtol", "nan"), ("--atol", "nan"), ("--rtol", "inf"), ("--atol", "inf")])
def test_a_tolerance_that_is_not_a_finite_number_is_refused(ftc, tmp_path, option, value):
    # nan judges no tensor within the tolerance, inf every one: neither is a verdict
    r = ftc("reproduce", tmp_path / "no-such-checkpoint", "-o", tmp_path / "rerun", option, value)
    assert r.code == ExitCode.USAGE, r.err
    assert f"{option} {value}: a tolerance is a finite number >= 0" in r.err
    assert "fix: e.g." in r.err and "Traceback" not in r.err
    assert not (tmp_path / "rerun").exists()


def test_an_unknown_tracker_is_refused_by_name(ftc, tmp_path):
    r = ftc("reproduce", tmp_path / "ckpt", "-o", tmp_path / "rerun", "--logger", "http://127.0.0.1:9")
    assert r.code == ExitCode.USAGE
    assert "'off', 'mlflow', 'wandb', 'tensorboard'" in r.err


@pytest.mark.parametrize("output", ["/etc/rerun", "/", "~", "/proc/self/cwd"])
def test_a_rerun_into_a_system_folder_is_refused_before_anything_is_read(ftc, tmp_path, output):
    r = ftc("reproduce", tmp_path / "no-such-checkpoint", "-o", output)
    assert r.code == ExitCode.USAGE, r.err
    assert f"-o {output}: " in r.err and "a rerun writes into a new folder of its own" in r.err


def test_a_link_to_a_system_folder_is_that_folder(ftc, tmp_path):
    (tmp_path / "innocent").symlink_to("/usr")
    r = ftc("reproduce", tmp_path / "no-such-checkpoint", "-o", tmp_path / "innocent" / "rerun")
    assert r.code == ExitCode.USAGE, r.err
    assert "/usr/rerun is inside /usr" in r.err
