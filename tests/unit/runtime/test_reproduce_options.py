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


def _plan_with_a_dvc_input(job, ftc, tmp_path, endpoint):
    import json

    from ftc.spec.plan import Plan
    from ftc.spec.plan_format import seal_plan

    assert ftc("compile", job(), "-o", tmp_path / "plan.json").code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["inputs"]["valid"] = {
        "source": "dvc", "uri": "dvc://example.com/data.git/valid.jsonl@abc", "pinned": True, "kind": "file",
        "digest": "sha256:" + "0" * 64, "size": 1,
        "pin": {"md5": "0" * 32, "remote": "s3://their-bucket/dvc", "endpoint": endpoint},
    }  # fmt: skip
    return Plan.from_dict(seal_plan(plan), folder=tmp_path)


def test_a_dvc_endpoint_the_checkpoint_names_is_not_sent_this_environments_credentials(job, ftc, tmp_path, monkeypatch):
    # new: a resealed plan's DVC pin naming an S3 endpoint of its author's: a rerun would sign requests with the
    # environment's AWS credentials and send them there
    from ftc.errors import InputUnresolvable
    from ftc.lineage.plan import refuse_foreign_endpoints

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    plan = _plan_with_a_dvc_input(job, ftc, tmp_path, "http://user:SECRET@127.0.0.1:9/")
    with pytest.raises(InputUnresolvable) as raised:
        refuse_foreign_endpoints(plan)
    assert raised.value.exit_code == ExitCode.INPUT_UNCONFIGURED
    message = str(raised.value)
    assert (
        "valid: the checkpoint's plan reads" in message and "through the S3 endpoint http://***@127.0.0.1:9/" in message
    )
    assert "SECRET" not in message and "fix: if you trust that endpoint, set AWS_ENDPOINT_URL" in message
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8")  # another endpoint: still refused
    with pytest.raises(InputUnresolvable):
        refuse_foreign_endpoints(plan)


def test_a_dvc_endpoint_the_environment_names_too_is_used(job, ftc, tmp_path, monkeypatch):
    from ftc.lineage.plan import refuse_foreign_endpoints

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    refuse_foreign_endpoints(_plan_with_a_dvc_input(job, ftc, tmp_path, "http://127.0.0.1:9/"))


def test_only_the_roles_about_to_be_fetched_are_checked(job, ftc, tmp_path, monkeypatch):
    # serving an adapter fetches its base weights only: a foreign endpoint on the data is not its concern
    from ftc.lineage.plan import refuse_foreign_endpoints

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    plan = _plan_with_a_dvc_input(job, ftc, tmp_path, "http://127.0.0.1:9/")
    refuse_foreign_endpoints(plan, {"base_model"})
