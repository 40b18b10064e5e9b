"""A checkpoint in a store is addressed like a local one (a real SeaweedFS S3 server on 127.0.0.1): `ftc lineage
show|verify|export|diff`, `ftc report`, `ftc export`, `ftc generate` and `ftc data inspect` take a published
checkpoint (s3://…/checkpoints/step-N/) or a published run's prefix (through its best pointer, else latest), fetched
through the content cache and checked against the marker before anything reads it. One tiny run is published once
for the module; a test that changes what is stored changes a copy of it under another prefix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ftc.errors import ExitCode

from conftest import S3_KEY, S3_SECRET, age

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(s3_server, tiny_model, tmp_path_factory):
    """A LoRA run (16 examples, 2 epochs of 4 steps, a checkpoint per epoch) published to s3://BUCKET/run/, its
    inputs local and absolute, with the best and latest pointers the run writes."""
    import boto3

    from ftc.cli import main

    from support.models import arithmetic_examples, write_jsonl

    root = tmp_path_factory.mktemp("published")
    with pytest.MonkeyPatch.context() as env:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(var, raising=False)
        for var, value in (
            ("AWS_ENDPOINT_URL", s3_server),
            ("AWS_ACCESS_KEY_ID", S3_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("FTC_CACHE_DIR", str(root / "cache")),
        ):
            env.setenv(var, value)
        client = boto3.client("s3")
        bucket = "ftc-store-checkpoints"
        client.create_bucket(Bucket=bucket)
        write_jsonl(root / "data" / "train.jsonl", arithmetic_examples(16, seed=1))
        write_jsonl(root / "data" / "valid.jsonl", arithmetic_examples(4, seed=2))
        age(root / "data")
        spec = {
            "model_id": "ftc-tests/tiny-llama",
            "initial_base_model_ckpt_path": str(tiny_model),
            "train_path": str(root / "data" / "train.jsonl"),  # absolute: found again from a fetched checkpoint
            "valid_path": str(root / "data" / "valid.jsonl"),
            "lora_config": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "context_length": 64,
            "num_epochs": 2,
            "learning_rate": 1e-2,
            "output_dir": f"s3://{bucket}/run/",
        }
        (root / "job.yaml").write_text(yaml.safe_dump(spec))
        assert main(["compile", str(root / "job.yaml"), "-o", str(root / "plan.json")]) == 0
        assert main(["run", str(root / "plan.json")]) == 0
        objects = _objects(client, bucket, "run/")
        steps = sorted(k.removesuffix(".complete")[len("checkpoints/") :] for k in objects if k.endswith(".complete"))
        records = {s: json.loads(objects[f"checkpoints/{s}.complete"])["record_id"] for s in steps}
        assert steps == ["step-000004", "step-000008"]  # both kept: the tests below tell one from the other
        assert {"best", "latest"} <= set(objects)  # the run's pointers, each written after its checkpoint's marker
        best = json.loads(objects["best"])["checkpoint"].removeprefix("checkpoints/")
        yield SimpleNamespace(
            client=client, bucket=bucket, prefix=f"s3://{bucket}/run/", steps=steps, records=records,
            best=best, best_id=records[best], root=root,
        )  # fmt: skip


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _copy(published, to: str, *, skip: tuple[str, ...] = ()) -> str:
    """The published run copied to s3://BUCKET/<to>/ (but the names in ``skip``): its URI."""
    client, bucket = published.client, published.bucket
    for name in _objects(client, bucket, "run/"):
        if name not in skip:
            client.copy_object(Bucket=bucket, Key=f"{to}/{name}", CopySource={"Bucket": bucket, "Key": f"run/{name}"})
    return f"s3://{bucket}/{to}/"


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """The URI of every object a command downloads from S3 (a read of the content cache is not one)."""
    from ftc.stores.s3 import S3Store

    seen: list[str] = []
    plain = S3Store.opener

    def opener(self, obj):
        inner = plain(self, obj)

        def counted(start, end):
            seen.append(obj.uri)
            return inner(start, end)

        return counted

    monkeypatch.setattr(S3Store, "opener", opener)
    return seen


def test_a_run_prefix_is_read_through_its_best_pointer_and_fetched_once(published, ftc, tmp_path, downloads):
    prefix, best = published.prefix, published.best
    checkpoint = f"{prefix}checkpoints/{best}/"
    r = ftc("lineage", "show", prefix, "--format", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["chain"][0]["record_id"] == published.best_id
    assert f"{prefix}best: {checkpoint}" in r.err  # which checkpoint the pointer named, on stderr
    fetched = len(downloads)
    assert fetched >= 3 and all(uri.startswith(checkpoint) for uri in downloads)  # the checkpoint's files, no more
    # every other command, and the prefix without its slash: the content cache answers, nothing is downloaded again
    r = ftc("lineage", "verify", prefix.rstrip("/"))
    assert r.code == 0, r.err
    assert "verified: " in r.out and f"of {best} re-hashed" in r.out and f"record {published.best_id}" in r.out
    r = ftc("lineage", "export", f"{prefix}best", "--format", "openlineage")
    assert r.code == 0, r.err
    assert json.loads(r.out)["outputs"][0]["name"] == f"ftc-tests/tiny-llama/{best}"
    r = ftc("report", prefix, "-o", tmp_path / "report.html")
    assert r.code == 0, r.err
    page = (tmp_path / "report.html").read_text()
    assert published.best_id in page and "metrics.jsonl, which the lineage record does not cover" in page  # its curve
    assert f"ftc run report · {checkpoint.rstrip('/')} · " in page  # named by its URI, not the fetched copy
    first = f"{prefix}checkpoints/{published.steps[0]}"
    r = ftc("lineage", "diff", first, prefix, "--format", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["a"] == first and json.loads(r.out)["b"] == checkpoint.rstrip("/")
    assert downloads[fetched:] == [u for u in downloads[fetched:] if u.startswith(first)]  # only the other one
    assert not any(Path(os.environ["FTC_CACHE_DIR"]).glob("checkpoints/fetched-*"))  # each copy removed after


def test_a_published_checkpoint_and_a_run_prefix_are_exported_and_answer(published, ftc, tmp_path):
    checkpoint = f"{published.prefix}checkpoints/{published.steps[0]}/"
    r = ftc("export", checkpoint, "-o", tmp_path / "export")
    assert r.code == 0, r.err
    assert "lineage record" in r.out and (tmp_path / "export" / "model.safetensors").is_file()
    r = ftc("lineage", "verify", tmp_path / "export")
    assert r.code == 0, r.err
    r = ftc("generate", published.prefix, "--prompt", "2+2=", "--max-new-tokens", "4")
    assert r.code == 0, r.err
    assert f"{published.prefix}best: " in r.err
    r = ftc("eval", published.prefix, "--data", published.root / "data" / "valid.jsonl", "-o", tmp_path / "e.jsonl")
    assert r.code == 0, r.err
    assert json.loads(r.out)["examples"] == 4 and f"{published.prefix}best: " in r.err
    assert json.loads(r.out)["model"] == f"{published.prefix}checkpoints/{published.best}"  # not the fetched copy
    r = ftc("eval", f"{published.prefix}checkpoints/{published.steps[0]}/", "--data", tmp_path / "nowhere.jsonl")
    assert r.code == ExitCode.USAGE and "nowhere.jsonl" in r.err, r.err
    r = ftc("data", "inspect", published.prefix, "-n", "1", "--no-color")
    assert r.code == 0, r.err
    assert "examples" in r.out


def test_a_tampered_object_in_the_store_is_refused_before_anything_reads_it(published, ftc, tmp_path, downloads):
    prefix = _copy(published, "tampered")
    key = f"tampered/checkpoints/{published.best}/adapter_model.safetensors"
    blob = bytearray(published.client.get_object(Bucket=published.bucket, Key=key)["Body"].read())
    blob[-1] ^= 1  # one bit, the size unchanged: only its sha256 tells
    published.client.put_object(Bucket=published.bucket, Key=key, Body=bytes(blob))
    for command in (["generate", prefix, "--prompt", "2+2="], ["lineage", "show", prefix], ["report", prefix]):
        extra = ["-o", tmp_path / "r.html"] if command[0] == "report" else []
        r = ftc(*command, *extra)
        assert r.code == ExitCode.LINEAGE_BROKEN, (command, r.err)
        assert f"s3://{published.bucket}/{key}: expected sha256:" in r.err and "the lineage does not verify" in r.err
    assert not (tmp_path / "r.html").exists()
    # the changed bytes were never kept: every command downloaded them again, and refused them again
    assert downloads.count(f"s3://{published.bucket}/{key}") == 3


def test_a_malformed_pointer_is_refused_naming_it(published, ftc):
    prefix = _copy(published, "malformed", skip=("best", "latest"))
    body = {
        "format": "ftc.pointer/1",
        "checkpoint": "../run/checkpoints/" + published.best,
        "record_id": published.best_id,
    }
    published.client.put_object(Bucket=published.bucket, Key="malformed/best", Body=json.dumps(body).encode())
    r = ftc("lineage", "show", prefix)
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"{prefix}best: not a pointer ftc wrote" in r.err and "checkpoints/step-N under the same prefix" in r.err
    published.client.put_object(Bucket=published.bucket, Key="malformed/best", Body=b"x" * 5000)
    r = ftc("lineage", "verify", prefix)
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"{prefix}best: not a pointer ftc wrote (5000 bytes" in r.err


def test_a_pointer_naming_another_record_is_refused_before_a_byte_is_downloaded(published, ftc, tmp_path, downloads):
    from ftc.stores.pointers import pointer_body

    prefix = _copy(published, "stale", skip=("best", "latest"))
    first, newest = published.steps[0], published.steps[-1]
    stale = pointer_body(f"checkpoints/{first}", published.records[newest])
    published.client.put_object(Bucket=published.bucket, Key="stale/best", Body=stale)
    r = ftc("export", prefix, "-o", tmp_path / "never")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"{prefix}best names record {published.records[newest]}, but {prefix}checkpoints/{first}/ holds" in r.err
    assert downloads == [] and not (tmp_path / "never").exists()


def test_latest_serves_a_prefix_without_best_and_is_accepted_by_name(published, ftc):
    from ftc.stores.pointers import pointer_body

    prefix = _copy(published, "latest-only", skip=("best", "latest"))
    newest = published.steps[-1]
    body = pointer_body(f"checkpoints/{newest}", published.records[newest])
    published.client.put_object(Bucket=published.bucket, Key="latest-only/latest", Body=body)
    for given in (prefix, f"{prefix}latest"):
        r = ftc("lineage", "show", given, "--format", "json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["chain"][0]["record_id"] == published.records[newest]
        assert f"{prefix}latest: {prefix}checkpoints/{newest}/" in r.err
    r = ftc("lineage", "show", f"{prefix}best")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"{prefix}best: no such pointer" in r.err


def test_a_prefix_with_no_pointer_says_what_is_there_and_what_to_type(published, ftc, tmp_path):
    prefix = _copy(published, "unpointed", skip=("best", "latest"))
    r = ftc("lineage", "verify", prefix)
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"{prefix}: no best or latest pointer here; the checkpoints published there: " in r.err
    assert all(f"{prefix}checkpoints/{s}/" in r.err for s in published.steps) and "fix: name one of them" in r.err
    nothing = f"s3://{published.bucket}/nothing-here/"
    r = ftc("report", nothing, "-o", tmp_path / "r.html")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"nothing is stored under {nothing}" in r.err and "s3://bucket/run/checkpoints/step-N/" in r.err
    # the names a store lists are outside bytes: shown escaped, never as terminal control sequences
    published.client.put_object(Bucket=published.bucket, Key="hostile/title\x1b]0;pwned\x07", Body=b"x")
    r = ftc("lineage", "show", f"s3://{published.bucket}/hostile/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "title\\x1b]0;pwned\\x07" in r.err and "\x1b" not in r.err and "\x07" not in r.err


def test_a_checkpoint_whose_upload_did_not_finish_is_refused(published, ftc):
    prefix = _copy(published, "unfinished", skip=(f"checkpoints/{published.best}.complete",))
    r = ftc("lineage", "show", f"{prefix}checkpoints/{published.best}")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "its upload has not finished" in r.err and f"{prefix}checkpoints/{published.best}.complete" in r.err


def test_a_published_checkpoint_is_reproduced_from_its_run_prefix(published, ftc, tmp_path):
    r = ftc("reproduce", f"{published.prefix}best", "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert (
        f"reproduced: {tmp_path / 'rerun'}/checkpoints/{published.best} against {published.prefix}checkpoints/" in r.out
    )
    assert f"{published.prefix}best: " in r.err
    rerun = json.loads((tmp_path / "rerun" / "checkpoints" / published.best / "lineage.json").read_text())
    assert rerun["results"]["step"] == int(published.best.removeprefix("step-"))
    origin = next(p for p in rerun["parents"] if p["relation"] == "reproduction-of")
    assert origin["source"]["given"] == f"{published.prefix}best"  # as given, not the fetched copy's path


def test_a_command_that_takes_a_folder_says_so_of_a_store_location(ftc):
    r = ftc("lineage", "sign", "s3://bucket/run/checkpoints/step-000008/")
    assert r.code == ExitCode.USAGE, r.err
    assert "s3://bucket/run/checkpoints/step-000008/: a location in a store, not a folder on this machine" in r.err


def test_a_run_published_to_gcs_is_read_through_its_prefix(gcs, job, ftc, tmp_path):
    prefix = f"gs://{gcs.bucket_name}/run/"
    assert ftc("compile", job(output_dir=prefix), "-o", tmp_path / "p.json").code == 0
    assert ftc("run", tmp_path / "p.json").code == 0
    best = json.loads(gcs.bucket(gcs.bucket_name).blob("run/best").download_as_bytes())
    r = ftc("lineage", "verify", prefix)
    assert r.code == 0, r.err
    assert f"{prefix}best: {prefix}{best['checkpoint']}/" in r.err and f"record {best['record_id']}" in r.out


def test_copies_that_killed_commands_left_in_the_cache_are_swept(published, ftc):
    import time

    root = Path(os.environ["FTC_CACHE_DIR"]) / "checkpoints"
    old, recent = root / "fetched-killed", root / "fetched-running"
    for folder in (old, recent):
        (folder / "checkpoints").mkdir(parents=True)
    days_ago = time.time() - 4 * 24 * 3600
    os.utime(old, (days_ago, days_ago))
    r = ftc("lineage", "show", published.prefix)
    assert r.code == 0, r.err
    assert not old.exists() and recent.is_dir()  # a command killed days ago; one that may still be running


@pytest.mark.parametrize("form", ["run prefix (best)", "checkpoint"])
def test_every_command_that_takes_a_checkpoint_takes_a_published_one_in_either_form(published, ftc, tmp_path, form):
    """The issue's list, each command on s3://bucket/run/ (through best) and on s3://bucket/run/checkpoints/step-N/."""
    given = published.prefix if form.startswith("run") else f"{published.prefix}checkpoints/{published.best}/"
    data = published.root / "data" / "valid.jsonl"
    for command in (
        ["lineage", "show", given],
        ["lineage", "verify", given],
        ["report", given, "-o", tmp_path / "report.html"],
        ["export", given, "-o", tmp_path / "export"],
        ["generate", given, "--prompt", "2+2=", "--max-new-tokens", "2"],
        ["eval", given, "--data", data, "-o", tmp_path / "answers.jsonl", "--max-new-tokens", "4"],
    ):
        r = ftc(*command)
        assert r.code == 0, (command, r.err)
    assert json.loads(r.out)["model"] == f"{published.prefix}checkpoints/{published.best}"
    assert (tmp_path / "export" / "model.safetensors").is_file() and (tmp_path / "report.html").is_file()
