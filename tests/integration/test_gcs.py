"""Inputs in Google Cloud Storage (a real fake-gcs-server on 127.0.0.1): pinned by generation at compile time,
verified and downloaded at run time."""

from __future__ import annotations

import hashlib
import time

import pytest

from ftc.errors import ExitCode

from conftest import metrics, read_json
from support.models import arithmetic_examples, write_jsonl
from support.servers import failing_server, silent_server

pytestmark = pytest.mark.slow


def _upload(gcs, local, name):
    gcs.bucket(gcs.bucket_name).blob(name).upload_from_filename(str(local))


def test_weights_and_data_in_gcs_compile_to_generations_and_train(gcs, job, ftc, tmp_path, tiny_model):
    for path in tiny_model.iterdir():
        _upload(gcs, path, f"weights/{path.name}")
    write_jsonl(tmp_path / "g.jsonl", arithmetic_examples(16, seed=3))
    _upload(gcs, tmp_path / "g.jsonl", "data/train.jsonl")
    spec = job(
        initial_base_model_ckpt_path=f"gs://{gcs.bucket_name}/weights/",
        valid_path=f"gs://{gcs.bucket_name}/data/train.jsonl",
        lora_config=None,
        num_epochs=1,
    )
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "p.json")
    base, valid = plan["inputs"]["base_model"], plan["inputs"]["valid"]
    assert base["source"] == "gcs" and all(f["pin"]["generation"] and f["pin"]["md5"] for f in base["files"])
    assert valid["digest"] == "sha256:" + hashlib.sha256((tmp_path / "g.jsonl").read_bytes()).hexdigest()
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert metrics(tmp_path / "output", "eval")[-1]["eval_loss"] > 0


def test_an_object_overwritten_after_compiling_is_refused(gcs, job, ftc, tmp_path):
    write_jsonl(tmp_path / "g.jsonl", arithmetic_examples(8, seed=3))
    _upload(gcs, tmp_path / "g.jsonl", "data/train.jsonl")
    assert (
        ftc("compile", job(train_path=f"gs://{gcs.bucket_name}/data/train.jsonl"), "-o", tmp_path / "p.json").code == 0
    )
    write_jsonl(tmp_path / "g2.jsonl", arithmetic_examples(9, seed=4))
    _upload(gcs, tmp_path / "g2.jsonl", "data/train.jsonl")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED
    assert f"gs://{gcs.bucket_name}/data/train.jsonl: generation" in r.err and "pinned by the plan is gone" in r.err
    assert "fix: recompile the spec (a restored object is a new generation)" in r.err
    assert not (tmp_path / "output").exists()


def test_an_endpoint_that_never_answers_fails_compile_and_run_in_seconds(gcs, job, ftc, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "g.jsonl", arithmetic_examples(8, seed=3))
    _upload(gcs, tmp_path / "g.jsonl", "data/train.jsonl")
    _upload(gcs, tmp_path / "g.jsonl", "data/valid.jsonl")
    spec = job(
        train_path=f"gs://{gcs.bucket_name}/data/train.jsonl", valid_path=f"gs://{gcs.bucket_name}/data/valid.jsonl"
    )
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    with silent_server() as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        for args in (("compile", spec, "-o", tmp_path / "q.json"), ("run", tmp_path / "p.json")):
            started = time.monotonic()
            r = ftc(*args)
            took = time.monotonic() - started
            assert r.code == ExitCode.INPUT_UNREACHABLE, r.err
            assert f"cannot reach GCS at {endpoint}" in r.err
            assert took < 20, f"{args[0]} took {took:.0f} s"
    assert not (tmp_path / "q.json").exists() and not (tmp_path / "output").exists()


@pytest.mark.parametrize(
    "where, unreachable, message",
    [
        ("gs://no-such-bucket-xyz/data/train.jsonl", None, "bucket 'no-such-bucket-xyz' does not exist"),
        ("gs://{bucket}/data/missing.jsonl", None, "no such object or prefix"),
        ("gs://{bucket}/data/train.jsonl", "http://127.0.0.1:9", "cannot reach GCS"),
        ("gs://{bucket}/data/train.jsonl", "failing", "try again"),
    ],
    ids=["missing-bucket", "missing-object", "unreachable", "5xx"],
)
def test_unresolvable_gcs_inputs_fail_compile_with_one_clear_line(
    gcs, job, ftc, tmp_path, monkeypatch, where, unreachable, message
):
    with failing_server(503) as failing:
        if unreachable:
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", failing if unreachable == "failing" else unreachable)
        start = time.monotonic()
        r = ftc("compile", job(train_path=where.format(bucket=gcs.bucket_name)), "-o", tmp_path / "p.json")
        assert time.monotonic() - start < 20
    assert r.code == (ExitCode.INPUT_UNREACHABLE if unreachable else ExitCode.INPUT_UNRESOLVABLE), r.err
    assert message in r.err and "$.train_path" in r.err and "\n    fix: " in r.err
