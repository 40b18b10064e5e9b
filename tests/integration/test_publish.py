"""output_dir in an object store (a real SeaweedFS S3 server and fake-gcs-server on 127.0.0.1): each checkpoint is
staged locally, uploaded with its lineage record, and made visible by a marker written last; a later spec continues
from one by its s3:// path (the seed guide's flow), and `ftc lineage verify` of the child walks to it in the store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import LORA, S3_KEY, S3_SECRET, read_json

pytestmark = pytest.mark.slow


def _objects(s3, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: s3.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}


def _stage1(s3, job, ftc, tmp_path, **overrides) -> tuple[str, dict[str, bytes]]:
    """A new adapter trained into s3://BUCKET/runs/stage1/ (2 epochs of 4 steps, a checkpoint per epoch)."""
    prefix = f"s3://{s3.bucket}/runs/stage1/"
    settings = dict(lora_config=LORA, num_epochs=2, learning_rate=1e-2, output_dir=prefix)
    spec = job(name="stage1.yaml", **{**settings, **overrides})
    r = ftc("compile", spec, "-o", tmp_path / "stage1.plan.json")
    assert r.code == 0, r.err
    assert read_json(tmp_path / "stage1.plan.json")["output"]["dir"] == prefix
    r = ftc("run", tmp_path / "stage1.plan.json")
    assert r.code == 0, r.err
    assert f"published step-000008 to {prefix}checkpoints/step-000008/" in r.out + r.err
    return prefix, _objects(s3, "runs/stage1/")


def _stage2(job, ftc, tmp_path, parent: str, **overrides):
    settings = dict(lora_config=None, initial_adapter_model_ckpt_path=parent, learning_rate=1e-2, output_dir="stage2")
    spec = job(name="stage2.yaml", **{**settings, **overrides})
    return ftc("compile", spec, "-o", tmp_path / "stage2.plan.json")


def test_each_checkpoint_is_uploaded_with_its_record_and_a_marker(s3, job, ftc, tmp_path):
    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    markers = sorted(k for k in objects if k.endswith(".complete"))
    assert markers == ["checkpoints/step-000004.complete", "checkpoints/step-000008.complete"]
    assert {"metrics.jsonl", "summary.json"} <= set(objects)
    assert len(objects["metrics.jsonl"].splitlines()) > 8  # train and eval records, all of them
    for marker_key in markers:
        marker = json.loads(objects[marker_key])
        step = marker_key.removesuffix(".complete")
        record = json.loads(objects[f"{step}/lineage.json"])
        assert marker["record_id"] == record["record_id"]
        assert marker["last"] is (step == "checkpoints/step-000008")
        uploaded = {k[len(step) + 1 :] for k in objects if k.startswith(step + "/")}
        assert uploaded == {f["path"] for f in marker["files"]}  # the checkpoint whole, no more
        for f in marker["files"]:  # every byte as the local checkpoint's record names it
            blob = objects[f"{step}/{f['path']}"]
            assert hashlib.sha256(blob).hexdigest() == f["sha256"] and len(blob) == f["size"]
        assert {f["path"] for f in record["checkpoint"]["files"]} == uploaded - {"lineage.json"}
    assert all(S3_SECRET.encode() not in b and S3_KEY.encode() not in b for b in objects.values())
    # the same prefix again: refused unless resumed; resumed, the run is complete and nothing is uploaded twice
    r = ftc("run", tmp_path / "stage1.plan.json")
    assert r.code == ExitCode.USAGE and f"{prefix} already holds" in r.err and "--resume" in r.err
    r = ftc("run", tmp_path / "stage1.plan.json", "--resume")
    assert r.code == 0, r.err
    assert "the run is complete; nothing to resume" in r.out + r.err and "published" not in r.out + r.err


def test_a_spec_continues_from_a_published_checkpoint_and_verify_walks_to_it(s3, job, ftc, tmp_path):
    """The seed guide's flow with both stages' checkpoints in S3: stage 2 continues from stage 1's adapter by its
    s3:// path, and `ftc lineage verify` of stage 2's published checkpoint fetches and checks stage 1's."""
    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    parent = f"{prefix}checkpoints/step-000008/"
    r = _stage2(job, ftc, tmp_path, parent, output_dir=f"s3://{s3.bucket}/runs/stage2/")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "stage2.plan.json")
    assert r.code == 0, r.err
    child = f"s3://{s3.bucket}/runs/stage2/checkpoints/step-000004/"
    record = json.loads(_objects(s3, "runs/stage2/")["checkpoints/step-000004/lineage.json"])
    (adapter,) = [p for p in record["parents"] if p["role"] == "adapter"]
    assert adapter["source"]["source"] == "s3" and adapter["source"]["uri"] == parent
    assert adapter["record_id"] == json.loads(objects["checkpoints/step-000008/lineage.json"])["record_id"]
    assert all(f["pin"]["etag"] and f["size"] >= 0 for f in adapter["files"])  # each object pinned, for verify
    r = ftc("lineage", "verify", child)
    assert r.code == 0, r.err
    assert "verified: " in r.out and f"re-hashed parent: adapter {parent} (" in r.out
    assert "fetched from the store" in r.out and "2 lineage record(s) in the chain recomputed" in r.out
    # the parent changed in the store after the child was trained: verify names the object
    s3.put_object(Bucket=s3.bucket, Key="runs/stage1/checkpoints/step-000008/adapter_config.json", Body=b"{}")
    r = ftc("lineage", "verify", child)
    assert r.code == ExitCode.LINEAGE_BROKEN, r.out + r.err
    assert f"{parent}adapter_config.json" in r.err and "changed" in r.err
    # and the child itself, changed in the store: its download is checked against its marker
    s3.put_object(Bucket=s3.bucket, Key="runs/stage2/checkpoints/step-000004/adapter_config.json", Body=b"{}")
    r = ftc("lineage", "verify", child)
    assert r.code == ExitCode.LINEAGE_BROKEN, r.out + r.err
    assert f"{child}adapter_config.json: 2 bytes, the marker says" in r.err


def test_a_checkpoint_whose_upload_did_not_finish_is_refused_as_a_parent(s3, job, ftc, tmp_path):
    prefix, _ = _stage1(s3, job, ftc, tmp_path)
    s3.delete_object(Bucket=s3.bucket, Key="runs/stage1/checkpoints/step-000004.complete")  # the upload cut short
    r = _stage2(job, ftc, tmp_path, f"{prefix}checkpoints/step-000004/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "its upload has not finished" in r.err and f"{prefix}checkpoints/step-000004.complete" in r.err
    # a file missing from an upload that has its marker: also not a checkpoint to continue from
    s3.delete_object(Bucket=s3.bucket, Key="runs/stage1/checkpoints/step-000008/adapter_config.json")
    r = _stage2(job, ftc, tmp_path, f"{prefix}checkpoints/step-000008/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "adapter_config.json: named by the marker, not in the store" in r.err


@pytest.mark.parametrize("output_dir", ["s3://only-a-bucket", "s3://b/../x/", "ftp://b/runs/x/"])
def test_an_output_dir_that_is_not_a_prefix_in_a_bucket_is_a_spec_error(job, ftc, tmp_path, output_dir):
    r = ftc("compile", job(output_dir=output_dir), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "output_dir" in r.err and output_dir in r.err


def test_a_bucket_that_does_not_exist_stops_the_run_before_training(s3, job, ftc, tmp_path):
    spec = job(output_dir=f"s3://{s3.bucket}-missing/runs/x/")
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "does not exist" in r.err and "output_dir" in r.err
    assert "step" not in r.out  # no training began


def test_output_dir_in_gcs_publishes_the_same_layout(gcs, job, ftc, tmp_path):
    prefix = f"gs://{gcs.bucket_name}/runs/x/"
    r = ftc("compile", job(output_dir=prefix), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    names = sorted(b.name for b in gcs.list_blobs(gcs.bucket_name, prefix="runs/x/"))
    markers = [n for n in names if n.endswith(".complete")]
    assert markers and all(n.startswith("runs/x/checkpoints/step-") for n in markers)
    last = json.loads(gcs.bucket(gcs.bucket_name).blob(markers[-1]).download_as_bytes())
    step = markers[-1].removesuffix(".complete")
    assert {f["path"] for f in last["files"]} == {n[len(step) + 1 :] for n in names if n.startswith(step + "/")}
    assert last["last"] is True


def test_resume_on_another_machine_downloads_the_newest_published_checkpoint(
    s3, job, ftc, tmp_path, monkeypatch, mlflow_url
):
    mlflow = {"provider": "mlflow", "provider_config": {"tracking_uri": mlflow_url, "experiment_name": "ftc-moved"}}
    prefix, objects = _stage1(s3, job, ftc, tmp_path, logger=mlflow)
    run_id = json.loads(objects["tracker.json"])["run_id"]
    weights = "checkpoints/step-000008/adapter_model.safetensors"
    # the run died after publishing step 4: step 8 and the summary never reached the store ...
    for key in [k for k in objects if k.startswith("checkpoints/step-000008") or k == "summary.json"]:
        s3.delete_object(Bucket=s3.bucket, Key="runs/stage1/" + key)
    # ... and it resumes on a machine whose cache (and so staging folder) is empty
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "another-machine"))
    r = ftc("run", tmp_path / "stage1.plan.json", "--resume")
    assert r.code == 0, r.err
    said = r.out + r.err
    assert f"step-000004 is not staged in {tmp_path / 'another-machine'}" in said and "downloading it from" in said
    assert "resuming from step-000004: step 4 of 8" in said
    assert "(continuing it after step 4)" in said  # the tracker run named by the store's tracker.json
    again = _objects(s3, "runs/stage1/")
    assert again[weights] == objects[weights]  # the resumed run ends with the uninterrupted run's weights, bitwise
    assert json.loads(again["checkpoints/step-000008.complete"])["last"] is True
    assert json.loads(again["tracker.json"])["run_id"] == run_id


def test_a_tampered_published_checkpoint_is_not_resumed_from(s3, job, ftc, tmp_path, monkeypatch):
    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    for key in [k for k in objects if k.startswith("checkpoints/step-000008")]:
        s3.delete_object(Bucket=s3.bucket, Key="runs/stage1/" + key)
    s3.put_object(Bucket=s3.bucket, Key="runs/stage1/checkpoints/step-000004/adapter_config.json", Body=b"{}")
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "another-machine"))
    r = ftc("run", tmp_path / "stage1.plan.json", "--resume")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"cannot resume from {prefix}checkpoints/step-000004/" in r.err and "bytes, the marker says" in r.err
    assert not (tmp_path / "another-machine" / "staging").exists() or not any(
        (tmp_path / "another-machine" / "staging").rglob("*.safetensors")
    )


def test_credentials_the_store_refuses_stop_the_run_before_training(s3, job, ftc, tmp_path, monkeypatch):
    spec = job(output_dir=f"s3://{s3.bucket}/runs/x/")
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_DENIED, r.err
    assert "output_dir: cannot list it" in r.err and "access denied" in r.err
    assert "not-the-secret" not in r.out + r.err


def test_a_published_runs_checkpoint_reproduces_into_a_folder_not_its_prefix(s3, job, ftc, tmp_path):
    from ftc.stores.publish import download_checkpoint
    from ftc.stores.remote import store_for

    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    plan_id = read_json(tmp_path / "stage1.plan.json")["plan_id"].removeprefix("sha256:")
    staged = Path(os.environ["FTC_CACHE_DIR"]) / "staging" / plan_id[:16] / "checkpoints" / "step-000004"
    assert not staged.parent.parent.exists()  # gone once everything in it was published
    # the checkpoint downloaded where it was written (its record locates the data relative to that folder)
    staged.parent.mkdir(parents=True)
    download_checkpoint(store_for(prefix), f"{prefix}checkpoints/step-000004/", staged)
    r = ftc("reproduce", staged, "-o", tmp_path / "again")
    assert r.code == 0, r.err
    assert "bitwise" in r.out + r.err
    assert _objects(s3, "runs/stage1/").keys() == objects.keys()  # the rerun published nothing to the prefix


def test_a_store_that_fails_stops_the_run_before_training_with_exit_10(s3, job, ftc, tmp_path, monkeypatch):
    from support.servers import failing_server

    spec = job(output_dir=f"s3://{s3.bucket}/runs/x/")
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    with failing_server(503) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNREACHABLE, r.err
    assert "output_dir: cannot list it" in r.err and "failed (ServiceUnavailable)" in r.err and "try again" in r.err
    assert "staging folder" not in r.err  # nothing was staged: it failed before training


def test_a_marker_that_is_not_ftcs_or_does_not_match_is_refused(s3, job, ftc, tmp_path):
    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    key = "runs/stage1/checkpoints/step-{}.complete"
    # not a marker: refused when continuing from it and when verifying it
    s3.put_object(Bucket=s3.bucket, Key=key.format("000004"), Body=b'{"record_id": "x", "files": [{"path": "../x"}]}')
    r = _stage2(job, ftc, tmp_path, f"{prefix}checkpoints/step-000004/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"{prefix}checkpoints/step-000004.complete: not a checkpoint marker ftc wrote" in r.err
    # a marker naming another lineage record than the one uploaded
    marker = json.loads(objects["checkpoints/step-000008.complete"])
    s3.put_object(Bucket=s3.bucket, Key=key.format("000008"), Body=json.dumps({**marker, "record_id": "sha256:0"}))
    r = _stage2(job, ftc, tmp_path, f"{prefix}checkpoints/step-000008/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "lineage.json: record sha256:" in r.err and "the marker names sha256:0" in r.err
    # verify of a published checkpoint without its marker, and in a bucket that does not exist
    s3.delete_object(Bucket=s3.bucket, Key=key.format("000008"))
    r = ftc("lineage", "verify", f"{prefix}checkpoints/step-000008/")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "its upload has not finished" in r.err
    r = ftc("lineage", "verify", f"s3://{s3.bucket}-missing/runs/stage1/checkpoints/step-000008/")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "does not exist" in r.err


def test_verify_with_the_store_unreachable_checks_the_records_and_says_what_it_could_not_rehash(
    s3, job, ftc, tmp_path, monkeypatch
):
    from support.servers import failing_server

    prefix, _ = _stage1(s3, job, ftc, tmp_path)
    parent = f"{prefix}checkpoints/step-000008/"
    assert _stage2(job, ftc, tmp_path, parent).code == 0
    assert ftc("run", tmp_path / "stage2.plan.json").code == 0
    with failing_server(503) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        r = ftc("lineage", "verify", tmp_path / "stage2")
    assert r.code == 0, r.err
    assert f"not re-hashed (not found here; its record was checked): adapter of step-000004: {parent}" in r.out
    assert "failed (503)" in r.out and "try again" in r.out


def test_an_upload_refused_in_the_middle_of_a_run_is_said_at_once_and_resume_uploads_the_rest(
    s3, s3_server, job, ftc, tmp_path, monkeypatch
):
    """The store starts refusing the run's credentials after training began (step 4's upload): the warning comes
    while training goes on, every checkpoint is still staged, the run exits 9 with the staging note, and
    ``--resume`` with working credentials uploads what is missing without training again."""
    import threading

    import ftc.runtime.launch.publish as publish
    import ftc.runtime.recipes.sft as train

    from support.servers import refusing_proxy

    prefix = f"s3://{s3.bucket}/runs/cut/"
    spec = job(lora_config=LORA, num_epochs=3, output_dir=prefix)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    said, log, save = threading.Event(), publish.log, train._save

    def noting(message: str) -> None:
        log(message)
        if "training goes on" in message:
            said.set()

    def save_then_wait(run, state, *args):
        # a test seam, not a stand-in: the tiny model trains 8 more steps in less time than the uploader's first
        # look, so training waits after step 4 (at most a minute) for the uploader to report, proving it does so
        # while the run is still training
        save(run, state, *args)
        if state.global_step == 4:
            said.wait(60)

    monkeypatch.setattr(publish, "log", noting)
    monkeypatch.setattr(train, "_save", save_then_wait)
    with refusing_proxy(s3_server, lambda method, path: method == "PUT" and "/step-000004/" in path) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_DENIED, r.err
    warning = r.err.index("warning: output_dir: uploading step-000004")
    assert "training goes on; the run will exit with this error when it ends" in r.err
    assert warning < r.err.index("done: 3 epoch(s), 12 steps")  # said while training went on
    assert r.err.rstrip().endswith("`ftc run PLAN --resume` uploads what is missing")
    staged = Path(os.environ["FTC_CACHE_DIR"]) / "staging"
    assert len(list(staged.glob("*/checkpoints/step-0000*/lineage.json"))) == 3  # nothing was lost
    assert not _objects(s3, "runs/cut/checkpoints/step-000004.complete")

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # the credentials work again
    r = ftc("run", tmp_path / "p.json", "--resume")
    assert r.code == 0, r.err
    assert "the run is complete; nothing to resume" in r.err and "published step-000004" in r.err
    objects = _objects(s3, "runs/cut/")
    assert {"metrics.jsonl", "summary.json"} <= objects.keys()
    for step in ("000004", "000008", "000012"):
        marker = json.loads(objects[f"checkpoints/step-{step}.complete"])
        for f in marker["files"]:
            assert hashlib.sha256(objects[f"checkpoints/step-{step}/{f['path']}"]).hexdigest() == f["sha256"]
    assert json.loads(objects["checkpoints/step-000012.complete"])["last"] is True


@pytest.mark.parametrize(
    ("output_dir", "module", "message"),
    [
        ("s3://bucket/runs/x/", "boto3", "s3:// locations need boto3, which is not installed\n    "
         "fix: pip install 'ftc[s3]'"),
        ("gs://bucket/runs/x/", "google.cloud.storage", "gs:// locations need google-cloud-storage, which is not "
         "installed\n    fix: pip install 'ftc[gcs]'"),
    ],
)  # fmt: skip
def test_a_store_output_dir_without_its_client_library_says_what_to_install(job, ftc, tmp_path, output_dir, module,
                                                                            message):  # fmt: skip
    # the libraries are installed here; the child process is made to find none (its import fails, as without them)
    assert ftc("compile", job(output_dir=output_dir), "-o", tmp_path / "p.json").code == 0
    probe = (
        f"import sys\nsys.modules[{module!r}] = None\nfrom ftc.cli import _entry\n"
        f"sys.argv = ['ftc', 'run', {str(tmp_path / 'p.json')!r}]\n_entry()"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == ExitCode.INPUT_UNCONFIGURED, r.stderr
    assert f"output_dir: cannot write there: {message}" in r.stderr
    assert not (tmp_path / "output").exists()


def test_a_published_checkpoint_downloads_whole_and_counts_its_bytes_for_the_progress_display(s3, job, ftc, tmp_path):
    from ftc.stores.publish import download_checkpoint
    from ftc.stores.remote import store_for

    prefix, objects = _stage1(s3, job, ftc, tmp_path)
    counted: list[int] = []
    marker = download_checkpoint(
        store_for(prefix), f"{prefix}checkpoints/step-000004/", tmp_path / "got", on_bytes=counted.append
    )
    assert sum(counted) == sum(f["size"] for f in marker["files"]) > 0
    for f in marker["files"]:
        assert hashlib.sha256((tmp_path / "got" / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert not list(tmp_path.glob(".got.download"))  # made whole under a temporary name, then renamed


def test_a_link_planted_at_a_download_s_temporary_name_is_never_written_through(s3, job, ftc, tmp_path):
    from ftc.stores.publish import download_checkpoint
    from ftc.stores.remote import store_for

    prefix, _ = _stage1(s3, job, ftc, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".got.download").symlink_to(elsewhere)
    marker = download_checkpoint(store_for(prefix), f"{prefix}checkpoints/step-000004/", tmp_path / "got")
    assert list(elsewhere.iterdir()) == []  # before, every file was copied into the folder the link named
    assert not (tmp_path / "got").is_symlink()
    assert sorted(p.relative_to(tmp_path / "got").as_posix() for p in (tmp_path / "got").rglob("*") if p.is_file()) \
        == sorted(f["path"] for f in marker["files"])  # fmt: skip
