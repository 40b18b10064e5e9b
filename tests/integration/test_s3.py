"""Inputs in S3 (a real SeaweedFS server on 127.0.0.1): pinned at compile time, verified and downloaded at run
time, never a credential in a plan, a log or a checkpoint."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import S3_KEY, S3_SECRET, metrics, read_json, spec_in_s3
from support.models import arithmetic_examples, write_jsonl
from support.servers import failing_server, silent_server, start_seaweedfs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def failing_endpoint():
    with failing_server(503) as endpoint:
        yield endpoint


def _no_secrets_under(*paths):
    for root in paths:
        for path in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
            blob = path.read_bytes()
            assert S3_SECRET.encode() not in blob and S3_KEY.encode() not in blob, path


def test_weights_and_data_in_s3_compile_to_pins_and_train(s3, job, ftc, tmp_path, tiny_model):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "p.json")
    base, train = plan["inputs"]["base_model"], plan["inputs"]["train"]
    assert base["source"] == "s3" and base["kind"] == "dir" and base["pinned"]
    assert {f["path"] for f in base["files"]} >= {"config.json", "model.safetensors"}
    assert all(f["pin"]["etag"] and f["size"] for f in base["files"])
    for f in base["files"]:  # single-part, unencrypted uploads: S3 vouches for their md5, and downloads are checked
        assert f["pin"]["md5"] == hashlib.md5((tiny_model / f["path"]).read_bytes()).hexdigest()
    expected = hashlib.sha256((tmp_path / "s3-train.jsonl").read_bytes()).hexdigest()
    assert train["digest"] == "sha256:" + expected and train["records"] == 16
    assert plan["architecture"]["source"] == "checkpoint"  # config.json was read from the bucket
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert len(metrics(tmp_path / "output", "train")) == 4
    _no_secrets_under(tmp_path / "p.json", tmp_path / "output")
    assert S3_SECRET not in r.out + r.err and S3_KEY not in r.out + r.err


def test_an_object_replaced_after_compiling_is_refused(s3, job, ftc, tmp_path, tiny_model):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    s3.put_object(Bucket=s3.bucket, Key="weights/config.json", Body=b'{"model_type": "llama"}')
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED
    assert f"s3://{s3.bucket}/weights/config.json: the object changed since the plan was compiled (ETag " in r.err
    assert not (tmp_path / "output").exists()


def test_a_changed_byte_in_the_cache_is_caught_and_the_object_downloaded_again(s3, job, ftc, tmp_path, tiny_model):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    assert ftc("run", tmp_path / "p.json").code == 0
    before = [m["eval_loss"] for m in metrics(tmp_path / "output", "eval")]
    objects = [p for p in (Path(os.environ["FTC_CACHE_DIR"]) / "objects").rglob("*") if p.is_file()]
    weights = max(objects, key=lambda p: p.stat().st_size)  # model.safetensors
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x40  # one weight, far off: the eval loss would move
    weights.write_bytes(bytes(blob))
    shutil.rmtree(tmp_path / "output")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert f"the cached copy of s3://{s3.bucket}/weights/model.safetensors" in r.err
    assert "is not the bytes it was stored as" in r.err and "downloading it again" in r.err
    assert [m["eval_loss"] for m in metrics(tmp_path / "output", "eval")] == before
    assert ftc("lineage", "verify", tmp_path / "output").code == 0


def test_an_endpoint_that_never_answers_fails_compile_and_run_in_seconds(
    s3, job, ftc, tmp_path, tiny_model, monkeypatch
):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, valid_path=None)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    with silent_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        for args in (("compile", spec, "-o", tmp_path / "q.json"), ("run", tmp_path / "p.json")):
            started = time.monotonic()
            r = ftc(*args)
            took = time.monotonic() - started
            assert r.code == ExitCode.INPUT_UNREACHABLE, r.err
            assert f"cannot reach the S3 endpoint {endpoint} (ReadTimeoutError)" in r.err
            assert took < 20, f"{args[0]} took {took:.0f} s"  # 2 x 6 s time-outs, every input at once
    assert not (tmp_path / "q.json").exists() and not (tmp_path / "output").exists()


def test_a_download_cut_by_the_server_dying_resumes_from_its_completed_ranges(tmp_path, monkeypatch):
    """A real server killed mid-download (its own SeaweedFS, so the shared one lives on): the store failure is
    'unreachable', the completed ranges are kept, and once the server is back the rest comes and verifies."""
    import signal

    import boto3

    from ftc.stores.content_cache import ContentCache
    from ftc.stores.remote import RemoteProblem
    from ftc.stores.s3 import S3Store

    root = tmp_path / "weed"
    blob = os.urandom(48 << 20)  # above 32 MiB: parallel byte ranges
    for key, value in {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    procs = []

    def start() -> str:
        proc, endpoint = start_seaweedfs(root, S3_KEY, S3_SECRET)
        procs.append(proc)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        return endpoint

    def stop(proc) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    try:
        client = boto3.session.Session().client("s3", endpoint_url=start())
        client.create_bucket(Bucket="cut")
        client.put_object(Bucket="cut", Key="big.bin", Body=blob)
        (obj,) = S3Store().list("s3://cut/big.bin")
        cache = ContentCache(tmp_path / "cache")

        def dying(opener):
            def open_from(start, end):
                if start == 32 << 20:  # the third of three 16 MiB ranges starts once one of the first two is done:
                    stop(procs[-1])  # the server dies then (however fast this machine reads)
                yield from opener(start, end)

            return open_from

        started = time.monotonic()
        with pytest.raises(RemoteProblem) as failed:
            store = S3Store()
            opener = dying(store.opener(obj))
            cache.fetch(obj.cache_key(), opener, size=obj.size, expected_md5=obj.md5_hex(), parts=2)
        assert failed.value.reason == "unreachable" and time.monotonic() - started < 30
        client = boto3.session.Session().client("s3", endpoint_url=start())  # back, at another port (the cache
        deadline = time.monotonic() + 60  # key is the object's, not the endpoint's); serving once its volume is up
        while True:
            try:
                client.get_object(Bucket="cut", Key="big.bin", Range="bytes=0-0")["Body"].read()
                break
            except Exception:
                assert time.monotonic() < deadline, "the restarted server never served the object"
                time.sleep(0.5)
        asked = [0]

        def counted(opener):
            def open_from(start, end):
                for chunk in opener(start, end):
                    asked[0] += len(chunk)
                    yield chunk

            return open_from

        store = S3Store()
        path, sha = cache.fetch(obj.cache_key(), counted(store.opener(obj)), size=obj.size, expected_md5=obj.md5_hex())
        assert sha == hashlib.sha256(blob).hexdigest() and path.read_bytes() == blob
        assert asked[0] <= 32 << 20  # the completed range (or two) was kept, not downloaded again
    finally:
        for proc in procs:
            stop(proc)


def test_a_versioned_bucket_trains_on_the_pinned_version(s3, job, ftc, tmp_path, tiny_model):
    s3.put_bucket_versioning(Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"})
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    plan = read_json(tmp_path / "p.json")
    assert plan["inputs"]["train"]["pin"]["version_id"]
    write_jsonl(tmp_path / "v2.jsonl", arithmetic_examples(40, seed=8))
    s3.upload_file(str(tmp_path / "v2.jsonl"), s3.bucket, "data/train.jsonl")  # a new version after compiling
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert len(metrics(tmp_path / "output", "train")) == 4  # 16 examples of the pinned version, not 40


@pytest.mark.parametrize(
    "where, env, code, message",
    [
        (
            "s3://no-such-bucket-here/data/train.jsonl",
            {},
            ExitCode.INPUT_UNRESOLVABLE,
            "bucket 'no-such-bucket-here' does not exist",
        ),
        ("s3://{bucket}/data/missing.jsonl", {}, ExitCode.INPUT_UNRESOLVABLE, "no such object or prefix"),
        (
            "s3://{bucket}/data/train.jsonl",
            {"AWS_SECRET_ACCESS_KEY": "wrong-secret"},
            ExitCode.INPUT_DENIED,
            "access denied",
        ),
        (
            "s3://{bucket}/data/train.jsonl",
            {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
            ExitCode.INPUT_DENIED,
            "no AWS credentials found",
        ),
        (
            "s3://{bucket}/data/train.jsonl",
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            ExitCode.INPUT_UNREACHABLE,
            "cannot reach the S3 endpoint",
        ),
        (
            "s3://{bucket}/data/train.jsonl",
            {"AWS_ENDPOINT_URL": "{failing}"},
            ExitCode.INPUT_UNREACHABLE,
            "failed (503) (found: ",
        ),
    ],
    ids=["missing-bucket", "missing-object", "wrong-credentials", "no-credentials", "unreachable-endpoint", "5xx"],
)
def test_unresolvable_s3_inputs_fail_compile_with_one_clear_line(
    s3, job, ftc, tmp_path, monkeypatch, failing_endpoint, where, env, code, message
):
    write_jsonl(tmp_path / "t.jsonl", arithmetic_examples(4, seed=1))
    s3.upload_file(str(tmp_path / "t.jsonl"), s3.bucket, "data/train.jsonl")
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value.format(failing=failing_endpoint))
        else:
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile of this machine's user either
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # nor an instance role (and no wait for one)
    start = time.monotonic()
    r = ftc("compile", job(train_path=where.format(bucket=s3.bucket)), "-o", tmp_path / "p.json")
    assert time.monotonic() - start < 30  # bounded: no endless retries
    assert r.code == code, r.err
    assert message in r.err and "$.train_path" in r.err and "\n    fix: " in r.err
    assert "wrong-secret" not in r.err and S3_SECRET not in r.err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    "env, code, message",
    [
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, ExitCode.INPUT_DENIED, "access denied"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, ExitCode.INPUT_UNREACHABLE, "cannot reach the S3 endpoint"),
        ({"AWS_ENDPOINT_URL": "{failing}"}, ExitCode.INPUT_UNREACHABLE, "failed (503)"),
    ],
    ids=["wrong-credentials", "unreachable-endpoint", "5xx"],
)
def test_a_store_that_fails_at_run_time_stops_the_run_before_training(
    s3, job, ftc, tmp_path, tiny_model, monkeypatch, failing_endpoint, env, code, message
):
    spec = spec_in_s3(s3, job, tmp_path, tiny_model)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(failing=failing_endpoint))
    r = ftc("run", tmp_path / "p.json")
    assert r.code == code, r.err
    assert message in r.err and "wrong-secret" not in r.err and "\n    fix: " in r.err
    assert not (tmp_path / "output").exists()


def test_an_object_named_with_a_newline_in_a_weights_prefix_is_refused(s3, job, ftc, tmp_path, tiny_model):
    from conftest import upload_folder

    upload_folder(s3, tiny_model, s3.bucket, "weights")
    s3.put_object(Bucket=s3.bucket, Key=f"weights/tokenizer.json\n{'0' * 64}  tokenizer_config.json", Body=b"{}")
    r = ftc("compile", job(initial_base_model_ckpt_path=f"s3://{s3.bucket}/weights/"), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "the file name 'tokenizer.json\\n000" in r.err and "rename the object in the store" in r.err
    assert not (tmp_path / "p.json").exists()


def test_a_password_in_aws_endpoint_url_reaches_no_message_and_no_plan(
    s3, s3_server, job, ftc, tmp_path, tiny_model, monkeypatch
):
    secret = "endpoint-Pa55/w@rd"
    spec = spec_in_s3(s3, job, tmp_path, tiny_model)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.replace("://", f"://minio:{secret}@"))
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNREACHABLE, r.err  # botocore takes no user-info in an endpoint
    assert f"s3://{s3.bucket}/weights/: cannot reach the S3 endpoint http://***@127.0.0.1:" in r.err
    assert secret not in r.out + r.err and "Pa55" not in r.out + r.err
    assert not (tmp_path / "p.json").exists()
