"""Credentials never reach a plan: every URL the spec gives (inputs, output_dir, the tracker, a DVC remote) is checked
with the one redaction, and refused when it holds user-info of any shape; the message shows it redacted."""

from __future__ import annotations

import pytest

from ftc.errors import ExitCode

SECRET = "hunter2-Pa55"


@pytest.mark.parametrize(
    "overrides, where",
    [
        ({"logger": {"provider": "mlflow", "provider_config": {"tracking_uri": f"http://u:{SECRET}/x@127.0.0.1:5000"}}},
         "$.logger.provider_config.tracking_uri"),
        ({"logger": {"provider": "mlflow", "provider_config": {"tracking_uri": f"http://u:a@{SECRET}@127.0.0.1:5000"}}},
         "$.logger.provider_config.tracking_uri"),
        ({"output_dir": f"s3://u:{SECRET}@bucket/runs/x"}, "$.output_dir"),
        ({"output_dir": f"s3://bucket/runs/x?token={SECRET}"}, "$.output_dir"),
        ({"train_path": f"s3://u:{SECRET}/1@bucket/data/train.jsonl"}, "$.train_path"),
        ({"train_path": f"gs://{SECRET}@bucket/data/train.jsonl"}, "$.train_path"),
        ({"train_path": {"dvc": {"path": "d", "repo": f"https://u:{SECRET}/x@127.0.0.1:9/d.git"}}},
         "$.train_path.dvc"),
    ],
    ids=["tracker-slash", "tracker-at", "output-userinfo", "output-query", "input-slash", "input-token", "dvc-repo"],
)  # fmt: skip
def test_a_credential_in_any_url_of_the_spec_is_refused_and_never_shown(job, ftc, tmp_path, overrides, where):
    r = ftc("compile", job(**overrides), "-o", tmp_path / "plan.json")
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert where in r.err and "credential" in r.err
    assert "***" in r.err or where.endswith("dvc")  # a location written as a mapping is not repeated
    assert SECRET not in r.err + r.out
    assert not (tmp_path / "plan.json").exists()


def test_an_s3_key_holding_at_is_no_credential(job, ftc, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("FTC_STORE_CONNECT_TIMEOUT", "1")
    r = ftc("compile", job(train_path="s3://bucket/data@v1/train.jsonl"), "-o", tmp_path / "plan.json")
    assert "credential" not in r.err
    assert "s3://bucket/data@v1/train.jsonl" in r.err  # shown as written: it is only unreachable here


def test_a_password_in_aws_endpoint_url_is_never_printed_in_compiles_error(job, ftc, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://user:{SECRET}/@x@127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("FTC_STORE_CONNECT_TIMEOUT", "1")
    r = ftc("compile", job(train_path="s3://bucket/data/train.jsonl"), "-o", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNREACHABLE, r.err
    assert "cannot reach the S3 endpoint http://***@127.0.0.1:9" in r.err
    assert SECRET not in r.err + r.out


def test_the_plan_writers_last_look_finds_a_credential_anywhere_in_what_it_writes():
    from ftc.compiler._compile import credential_in

    clean = {"inputs": {"train": {"uri": "s3://bucket/data@v1/t.jsonl", "pin": {"remote": "s3://b/dvc"}}}}
    assert credential_in(clean) is None
    hidden = {"inputs": {"train": {"pin": {"endpoint": f"http://u:{SECRET}/x@minio:9000"}}}, "output": {"dir": "o"}}
    assert credential_in(hidden) == ("$.inputs.train.pin.endpoint", f"http://u:{SECRET}/x@minio:9000")
    listed = {"inputs": {"base": {"files": [{"path": "a"}, {"pin": {"url": f"https://h/o?X-Amz-Signature={SECRET}"}}]}}}
    assert credential_in(listed)[0] == "$.inputs.base.files[1].pin.url"
