"""What a run published to a store leaves there (a real SeaweedFS S3 server and fake-gcs-server on 127.0.0.1): the
checkpoints the staging folder keeps, each with its marker, the ``best`` and ``latest`` pointers written after the
marker they name, and no staging folder once everything is published; a failed run keeps its staging folder and
says where; the last lines name the store's checkpoints."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ftc.errors import ExitCode
from ftc.stores.pointers import parse_pointer

from conftest import LORA

pytestmark = pytest.mark.slow


def _objects(s3, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: s3.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}


def _staging() -> Path:
    return Path(os.environ["FTC_CACHE_DIR"]) / "staging"


def _compiled(job, ftc, tmp_path, prefix: str, **overrides) -> Path:
    """A plan of 2 epochs of 4 steps, a checkpoint and an evaluation per epoch, published to ``prefix``."""
    settings = dict(lora_config=LORA, num_epochs=2, learning_rate=1e-2, output_dir=prefix)
    r = ftc("compile", job(**{**settings, **overrides}), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    return tmp_path / "p.json"


@pytest.fixture
def step4_published(monkeypatch):
    """Training waits after step 4's checkpoint (at most a minute) until the uploader has published it: a test seam,
    not a stand-in (the tiny model trains the next 4 steps before the uploader's first look, and step 4 would be
    pruned from the staging folder before it ever reached the store)."""
    import ftc.runtime.launch.publish as publish
    import ftc.runtime.recipes.sft as train

    done, log, save = threading.Event(), publish.log, train._save

    def noting(message: str) -> None:
        log(message)
        if message.startswith("published step-000004"):
            done.set()

    def save_then_wait(run, state, *args):
        save(run, state, *args)
        if state.global_step == 4:
            assert done.wait(60), "step 4 was not published within a minute"

    monkeypatch.setattr(publish, "log", noting)
    monkeypatch.setattr(train, "_save", save_then_wait)


def _pointer(raw: bytes, where: str, objects: dict[str, bytes]) -> str:
    """The checkpoint a pointer names, checked against the record published there."""
    checkpoint, record_id = parse_pointer(raw, where)
    assert json.loads(objects[f"{checkpoint}/lineage.json"])["record_id"] == record_id
    assert json.loads(objects[f"{checkpoint}.complete"])["record_id"] == record_id
    return checkpoint


def test_a_keep_one_run_leaves_one_checkpoint_its_pointers_and_no_staging_folder(
    s3, job, ftc, tmp_path, step4_published
):
    prefix = f"s3://{s3.bucket}/runs/keep1/"
    plan = _compiled(job, ftc, tmp_path, prefix, num_checkpoints_to_keep=1)
    r = ftc("run", plan)
    assert r.code == 0, r.err
    said = r.err
    # step 4 was published, then removed once step 8's marker and pointers were written
    assert said.index("published step-000004") < said.index("published step-000008")
    assert said.index("published step-000008") < said.index("removed step-000004 from")
    objects = _objects(s3, "runs/keep1/")
    evals = json.loads(objects["summary.json"])["evals"]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # so step 8 is the best as well as the newest
    step8 = {k for k in objects if k.startswith("checkpoints/step-000008/")}
    marker = json.loads(objects["checkpoints/step-000008.complete"])
    assert step8 == {f"checkpoints/step-000008/{f['path']}" for f in marker["files"]}
    assert set(objects) == step8 | {"checkpoints/step-000008.complete", "best", "latest", "metrics.jsonl",
                                    "summary.json"}  # fmt: skip
    for name in ("best", "latest"):
        assert _pointer(objects[name], prefix + name, objects) == "checkpoints/step-000008"
    assert not any(_staging().iterdir())  # the staging folder went with everything in it published
    # the last lines name the store's checkpoints, not the staging folder
    last = said.rstrip().splitlines()[-3:]
    assert "removed the staging folder" in last[0] and f"everything in it is in {prefix}" in last[0]
    assert last[1] == f"[ftc] best checkpoint: {prefix}checkpoints/step-000008/ (also {prefix}best)"
    assert last[2] == f"[ftc] latest checkpoint: {prefix}checkpoints/step-000008/ (also {prefix}latest)"
    assert f"[ftc] checkpoint (best eval loss): {prefix}checkpoints/step-000008/" in said  # the recipe's own line
    # resumed, the run is complete: nothing is published or removed, and the staging folder goes again
    r = ftc("run", plan, "--resume")
    assert r.code == 0, r.err
    assert "the run is complete" in r.err and "published" not in r.err and "removed step" not in r.err
    assert _objects(s3, "runs/keep1/") == objects and not any(_staging().iterdir())


def test_a_checkpoint_leaves_the_store_marker_first_and_a_refused_removal_keeps_the_run_going(
    s3, s3_server, job, ftc, tmp_path, monkeypatch, step4_published
):
    """The store refuses to delete step 4's files (credentials without delete rights): its marker went first, so
    what is left is never taken for a checkpoint; the run says so and succeeds."""
    from support.servers import refusing_proxy

    prefix = f"s3://{s3.bucket}/runs/refused/"
    plan = _compiled(job, ftc, tmp_path, prefix, num_checkpoints_to_keep=1)
    deletes: list[str] = []

    def refuse(method: str, path: str) -> bool:
        if method == "DELETE":
            deletes.append(path)
            return "/step-000004/" in path
        return False

    with refusing_proxy(s3_server, refuse) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        r = ftc("run", plan)
    assert r.code == 0, r.err
    assert deletes[0].endswith("/runs/refused/checkpoints/step-000004.complete")  # the marker first
    assert "/runs/refused/checkpoints/step-000004/" in deletes[1] and len(deletes) == 2  # then refused: no more
    assert "warning: output_dir: cannot remove step-000004 from the store" in r.err and "access denied" in r.err
    objects = _objects(s3, "runs/refused/")
    assert "checkpoints/step-000004.complete" not in objects and "checkpoints/step-000004/lineage.json" in objects
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    r = ftc("compile", job(name="child.yaml", initial_adapter_model_ckpt_path=f"{prefix}checkpoints/step-000004/",
                           lora_config=None), "-o", tmp_path / "child.json")  # fmt: skip
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "its upload has not finished" in r.err


def test_a_failed_run_keeps_its_staging_folder_says_where_and_resume_finishes_the_store(
    s3, s3_server, job, ftc, tmp_path, monkeypatch
):
    from support.servers import refusing_proxy

    prefix = f"s3://{s3.bucket}/runs/failed/"
    plan = _compiled(job, ftc, tmp_path, prefix)
    # the upload of step 8's marker is refused: the run fails, and no pointer names step 8
    with refusing_proxy(s3_server, lambda method, path: method == "PUT" and "step-000008.complete" in path) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        r = ftc("run", plan)
    assert r.code == ExitCode.INPUT_DENIED, r.err
    (staged,) = _staging().iterdir()
    assert f"the checkpoints are kept in the staging folder {staged}; " in r.err
    assert sorted(p.name for p in (staged / "checkpoints").iterdir()) == ["step-000004", "step-000008"]
    objects = _objects(s3, "runs/failed/")
    assert "checkpoints/step-000008.complete" not in objects
    assert _pointer(objects["latest"], prefix + "latest", objects) == "checkpoints/step-000004"
    # resumed with the store working: step 8 is published, the pointers move to it, the staging folder goes
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    r = ftc("run", plan, "--resume")
    assert r.code == 0, r.err
    assert "published step-000008" in r.err and "published step-000004" not in r.err
    assert not staged.exists()
    objects = _objects(s3, "runs/failed/")
    assert _pointer(objects["latest"], prefix + "latest", objects) == "checkpoints/step-000008"
    assert {"checkpoints/step-000004.complete", "checkpoints/step-000008.complete"} <= set(objects)  # keeps all


def test_an_interrupted_run_says_its_staging_folder_is_kept(s3, job, ftc, tmp_path, monkeypatch):
    import ftc.runtime.recipes.sft as train

    prefix = f"s3://{s3.bucket}/runs/stopped/"
    plan = _compiled(job, ftc, tmp_path, prefix)
    save = train._save

    def save_then_stop(run, state, *args):
        save(run, state, *args)
        raise KeyboardInterrupt  # Ctrl-C after the first checkpoint

    monkeypatch.setattr(train, "_save", save_then_stop)
    r = ftc("run", plan)
    assert r.code == ExitCode.INTERRUPTED, r.err
    (staged,) = _staging().iterdir()
    assert f"the staging folder {staged} is kept: it holds the checkpoints written so far" in r.err
    assert (staged / "checkpoints" / "step-000004" / "lineage.json").is_file()
    objects = _objects(s3, "runs/stopped/")
    assert _pointer(objects["latest"], prefix + "latest", objects) == "checkpoints/step-000004"


def test_a_keep_one_run_in_gcs_leaves_one_checkpoint_and_its_pointers(gcs, job, ftc, tmp_path, step4_published):
    prefix = f"gs://{gcs.bucket_name}/runs/x/"
    r = ftc("run", _compiled(job, ftc, tmp_path, prefix, num_checkpoints_to_keep=1))
    assert r.code == 0, r.err
    assert "removed step-000004 from" in r.err
    bucket = gcs.bucket(gcs.bucket_name)
    objects = {b.name[len("runs/x/") :]: b.download_as_bytes() for b in gcs.list_blobs(bucket, prefix="runs/x/")}
    assert {k.split("/")[1] for k in objects if k.startswith("checkpoints/")} == {
        "step-000008", "step-000008.complete"
    }  # fmt: skip
    for name in ("best", "latest"):
        assert _pointer(objects[name], prefix + name, objects) == "checkpoints/step-000008"
    assert not any(_staging().iterdir())
    assert r.err.rstrip().splitlines()[-1].endswith(f"{prefix}checkpoints/step-000008/ (also {prefix}latest)")


def test_verify_of_a_published_checkpoint_finds_a_base_given_relative_to_the_spec(s3, job, ftc, tmp_path, tiny_model):
    """The base is given as a path relative to the spec; the run wrote its record in the staging folder, and the
    checkpoint is verified, served and exported from copies the store gave (anywhere): the base is found where the
    spec named it."""
    import shutil

    from ftc.stores.publish import download_checkpoint
    from ftc.stores.remote import store_for

    shutil.copytree(tiny_model, tmp_path / "base")
    prefix = f"s3://{s3.bucket}/runs/relative/"
    r = ftc("run", _compiled(job, ftc, tmp_path, prefix, initial_base_model_ckpt_path="base"))
    assert r.code == 0, r.err
    copy = tmp_path / "elsewhere" / "deeper" / "step-000008"
    copy.parent.mkdir(parents=True)
    download_checkpoint(store_for(prefix), f"{prefix}checkpoints/step-000008/", copy)
    for checkpoint in (f"{prefix}checkpoints/step-000008/", copy):
        r = ftc("lineage", "verify", checkpoint)
        assert r.code == 0, r.err
        assert "re-hashed parent: base model base (" in r.out and "not re-hashed" not in r.out
    # serving an adapter from the store finds its base the same way (not beside the fetched copy)
    for checkpoint in (prefix, copy):
        r = ftc("generate", checkpoint, "--prompt", "2+2=", "--max-new-tokens", "2")
        assert r.code == 0, r.err
    r = ftc("export", f"{prefix}checkpoints/step-000008/", "-o", tmp_path / "export")
    assert r.code == 0, r.err
    # the base changed since: verify names it where the spec put it
    (tmp_path / "base" / "config.json").write_text("{}")
    r = ftc("lineage", "verify", copy)
    assert r.code == ExitCode.LINEAGE_BROKEN, r.out + r.err
    assert str(tmp_path / "base" / "config.json") in r.err


def _layout(s3, prefix: str) -> None:
    """A run's prefix as a run cut short leaves it: step 2 (best), 4 and 8 (latest) published, step 6 half removed
    (files, no marker) and step 10 half uploaded (files, no marker)."""
    import hashlib

    from ftc.stores.pointers import pointer_body

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=s3.bucket, Key=prefix + key, Body=body)

    for step in ("step-000002", "step-000004", "step-000006", "step-000008", "step-000010"):
        files = {"ftc_state.json": b'{"global_step": 1, "total_steps": 10}', "lineage.json": b"{}"}
        for name, body in files.items():
            put(f"checkpoints/{step}/{name}", body)
        if step not in ("step-000006", "step-000010"):
            listed = [{"path": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()]
            put(f"checkpoints/{step}.complete", json.dumps({"record_id": "x", "last": False, "files": listed}).encode())
    put("best", pointer_body("checkpoints/step-000002", "sha256:" + "2" * 64))
    put("latest", pointer_body("checkpoints/step-000008", "sha256:" + "8" * 64))


def _staged(staging: Path, *steps: str) -> None:
    for step in steps:
        (staging / "checkpoints" / step).mkdir(parents=True)
        (staging / "checkpoints" / step / "ftc_state.json").write_text('{"global_step": 1, "total_steps": 10}')


def test_the_store_drops_only_what_the_staging_folder_no_longer_keeps(s3, tmp_path):
    """Never a checkpoint a pointer names, one still staged, or one newer than the newest staged; a folder without
    its marker (a removal or upload cut short) goes when older. Resumed on another machine (the newest published
    downloaded into an empty staging folder), the checkpoints this staging folder never held stay."""
    from ftc.runtime.launch.publish import Publisher

    prefix = f"s3://{s3.bucket}/runs/cut/"
    _layout(s3, "runs/cut/")
    here = Publisher(prefix, tmp_path / "here")
    _staged(here.staging, "step-000008", "step-000010")
    here.check_start(resume=True)
    assert here.stale() == ["step-000004", "step-000006"]
    elsewhere = Publisher(prefix, tmp_path / "elsewhere")
    elsewhere.check_start(resume=True)  # downloads step 8, the newest published
    assert (elsewhere.staging / "checkpoints" / "step-000008" / "lineage.json").read_bytes() == b"{}"
    assert elsewhere.stale() == ["step-000006"]


def test_a_checkpoint_pruned_from_the_staging_folder_while_it_uploads_is_left_out(s3, job, ftc, tmp_path, monkeypatch):
    """The staging folder drops step 4 while its upload is under way (keep 1, step 8 came first): the run is not
    failed for it, and the store ends with step 8 alone."""
    import shutil

    import ftc.runtime.launch.publish as publish
    import ftc.runtime.recipes.sft as train

    started, send, save = threading.Event(), publish.publish_checkpoint, train._save

    def pruned_while_sent(store, uri, folder, record, last):
        if folder.name == "step-000004":  # a test seam: the local pruning, at the worst moment
            shutil.rmtree(folder)
            started.set()
        return send(store, uri, folder, record, last)

    def save_then_wait(run, state, *args):
        save(run, state, *args)
        if state.global_step == 4:
            assert started.wait(60), "step 4's upload did not start within a minute"

    monkeypatch.setattr(publish, "publish_checkpoint", pruned_while_sent)
    monkeypatch.setattr(train, "_save", save_then_wait)
    prefix = f"s3://{s3.bucket}/runs/raced/"
    r = ftc("run", _compiled(job, ftc, tmp_path, prefix, num_checkpoints_to_keep=1))
    assert r.code == 0, r.err
    assert "published step-000004" not in r.err and "published step-000008" in r.err
    objects = _objects(s3, "runs/raced/")
    assert {k.split("/")[1] for k in objects if k.startswith("checkpoints/")} == {"step-000008", "step-000008.complete"}
