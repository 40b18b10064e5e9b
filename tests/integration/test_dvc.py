"""Inputs tracked by DVC, in real git + DVC repositories made here: pinned to a commit and an md5 at compile time,
read from the repository's remote (a local folder, or S3 on the SeaweedFS server) and checked at run time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftc.compiler import diff_plans
from ftc.errors import ExitCode
from ftc.spec.plan import read_plan

from conftest import S3_KEY, S3_SECRET, metrics, read_json, upload_folder
from support.models import arithmetic_examples, write_jsonl

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def dvc(repo: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def commit(repo: Path, message: str, tag: str | None = None) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)


def new_repo(repo: Path) -> Path:
    """An empty git repository with DVC initialized, on branch main."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "tests@ftc")
    git(repo, "config", "user.name", "ftc tests")
    dvc(repo, "init", "-q")
    return repo


def new_data_repo(root: Path, remote: str | None = None, endpoint: str | None = None) -> Path:
    """A dataset repository: v0 (16 examples, no remote yet), v1 (same data, remote configured, pushed), v2 (40
    examples, pushed). ``remote`` defaults to a local folder beside the repository."""
    repo = new_repo(root / "datasets")
    dvc(repo, "config", "core.analytics", "false")
    (repo / "README.md").write_text("datasets\n")
    write_jsonl(repo / "data" / "train.jsonl", arithmetic_examples(16, seed=1))
    dvc(repo, "add", "-q", "data/train.jsonl")
    commit(repo, "train v1", "v0")
    dvc(repo, "remote", "add", "-d", "store", remote or str(root / "dvc-remote"))
    if endpoint:
        dvc(repo, "remote", "modify", "store", "endpointurl", endpoint)
    commit(repo, "remote", "v1")
    dvc(repo, "push", "-q")
    write_jsonl(repo / "data" / "train.jsonl", arithmetic_examples(40, seed=3))
    dvc(repo, "add", "-q", "data/train.jsonl")
    commit(repo, "train v2", "v2")
    dvc(repo, "push", "-q")
    return repo


@pytest.fixture
def data_repo(tmp_path) -> Path:
    return new_data_repo(tmp_path)


def tracked(path: str = "data/train.jsonl", **ref) -> dict:
    return {"dvc": {"repo": "datasets", "path": path, **ref}}


def test_one_spec_compiled_at_v1_and_at_v2_differs_only_in_that_pin_and_trains_on_each(data_repo, job, ftc, tmp_path):
    git(data_repo, "branch", "stable", "v1")
    spec = job(train_path=tracked(rev="stable"), lora_config=None, num_epochs=1)
    assert ftc("compile", spec, "-o", tmp_path / "v1.json").code == 0
    git(data_repo, "branch", "-f", "stable", "v2")
    r = ftc("compile", spec, "-o", tmp_path / "v2.json")
    assert r.code == 0, r.err
    v1, v2 = read_json(tmp_path / "v1.json"), read_json(tmp_path / "v2.json")
    changed = {
        line.split(":", 1)[0] for line in diff_plans(read_plan(tmp_path / "v1.json"), read_plan(tmp_path / "v2.json"))
    }
    assert changed == {f"inputs.train.{key}" for key in ("digest", "pin.commit", "pin.md5", "records", "size", "uri")}
    assert v1["inputs"]["train"]["pin"]["commit"] == git(data_repo, "rev-parse", "v1")
    assert v2["inputs"]["train"]["pin"]["commit"] == git(data_repo, "rev-parse", "v2")
    assert (v1["inputs"]["train"]["records"], v2["inputs"]["train"]["records"]) == (16, 40)
    assert v1["inputs"]["train"]["pin"]["remote"] == str(tmp_path / "dvc-remote")

    shutil.rmtree(os.environ["FTC_CACHE_DIR"])  # the runtime downloads from the remote, not from compile's copy
    for name, steps in (("v1.json", 4), ("v2.json", 10)):  # batch 4: 16 and 40 examples
        r = ftc("run", tmp_path / name)
        assert r.code == 0, r.err
        assert len(metrics(tmp_path / "output", "train")) == steps
        shutil.rmtree(tmp_path / "output")


def test_a_tracked_weights_folder_pins_every_file_by_md5(tmp_path, job, ftc, tiny_model):
    repo = new_repo(tmp_path / "datasets")
    shutil.copytree(tiny_model, repo / "weights")
    dvc(repo, "add", "-q", "weights")
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    commit(repo, "weights", "w1")
    dvc(repo, "push", "-q")
    r = ftc(
        "compile",
        job(initial_base_model_ckpt_path=tracked("weights", rev="w1"), lora_config=None, num_epochs=1),
        "-o",
        tmp_path / "p.json",
    )
    assert r.code == 0, r.err
    base = read_json(tmp_path / "p.json")["inputs"]["base_model"]
    assert base["source"] == "dvc" and base["kind"] == "dir" and base["pin"]["md5"].endswith(".dir")
    assert {f["path"] for f in base["files"]} >= {"config.json", "model.safetensors"}
    assert all(len(f["pin"]["md5"]) == 32 and f["size"] > 0 for f in base["files"])
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err


@pytest.mark.parametrize(
    "location, code, message",
    [
        (tracked("README.md", rev="v2"), ExitCode.INPUT_UNRESOLVABLE, "README.md is not tracked by DVC at v2"),
        (tracked("data/nope.jsonl", rev="v2"), ExitCode.INPUT_UNRESOLVABLE, "data/nope.jsonl: no such path at v2"),
        (tracked(rev="v9"), ExitCode.INPUT_UNRESOLVABLE, "no revision 'v9'"),
        (tracked(rev="v0"), ExitCode.INPUT_UNCONFIGURED, "configures no default DVC remote at v0"),
        (tracked(rev="unpushed"), ExitCode.INPUT_UNRESOLVABLE, "is not in the DVC remote"),
        (tracked(), ExitCode.SPEC_INVALID, "its .dvc file has changes not committed to git"),
        (
            {"dvc": {"repo": "https://user:hunter2@127.0.0.1:9/d.git", "path": "d"}},
            ExitCode.SPEC_INVALID,
            "the repo URL holds a credential",
        ),
        (
            {"dvc": {"repo": "http://127.0.0.1:9/d.git", "path": "d"}},
            ExitCode.INPUT_UNREACHABLE,
            "cannot clone the repository",
        ),
        (
            {"dvc": {"path": "data/train.jsonl"}},
            ExitCode.INPUT_UNRESOLVABLE,
            "the spec's folder is not in a git repository",
        ),
        (tracked(rev="v2", remote="ftp://127.0.0.1/store"), ExitCode.INPUT_UNCONFIGURED, "not a location ftc can read"),
    ],
    ids=[
        "not-tracked",
        "no-such-path",
        "no-such-rev",
        "no-remote-at-rev",
        "not-pushed",
        "uncommitted",
        "credential-in-url",
        "unreachable",
        "no-repo",
        "unsupported-remote",
    ],
)
def test_dvc_inputs_that_cannot_be_had_fail_compile_with_one_clear_line(
    data_repo, job, ftc, tmp_path, location, code, message
):
    write_jsonl(data_repo / "data" / "train.jsonl", arithmetic_examples(8, seed=5))
    dvc(data_repo, "add", "-q", "data/train.jsonl")
    commit(data_repo, "not pushed", "unpushed")
    write_jsonl(data_repo / "data" / "train.jsonl", arithmetic_examples(9, seed=6))
    dvc(data_repo, "add", "-q", "data/train.jsonl")  # and not committed
    r = ftc("compile", job(train_path=location), "-o", tmp_path / "p.json")
    assert r.code == code, r.err
    assert message in r.err and "$.train_path.dvc" in r.err
    assert "hunter2" not in r.err
    assert len(r.err.strip().splitlines()) == 3  # the heading, the problem, the fix
    assert not (tmp_path / "p.json").exists()


def test_compiling_a_dvc_input_without_dvc_installed_says_what_to_install(job, ftc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dvc.api", None)  # as if the dvc package were absent: its import fails
    r = ftc("compile", job(train_path=tracked(rev="v2")), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNCONFIGURED, r.err
    assert "inputs tracked by DVC need the dvc package to compile" in r.err and "pip install 'ftc[dvc]'" in r.err


@pytest.mark.parametrize(
    "listing",
    [b'{"relpath": "a"}', b"[" * 100_000 + b"]" * 100_000, b'[{"relpath": "a", "md5": NaN}]'],
    ids=["not a list", "100000 deep", "NaN"],
)
def test_a_dvc_folder_listing_that_is_not_one_is_refused_before_anything_reads_it(tmp_path, job, ftc, listing):
    repo = new_repo(tmp_path / "datasets")
    md5 = hashlib.md5(listing).hexdigest()  # a forged listing, stored under its own md5 as DVC would store one
    for store in (tmp_path / "dvc-remote", repo / ".dvc" / "cache"):
        stored = store / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
        stored.parent.mkdir(parents=True)
        stored.write_bytes(listing)
    (repo / "weights.dvc").write_text(
        f"outs:\n- md5: {md5}.dir\n  size: 1\n  nfiles: 1\n  hash: md5\n  path: weights\n"
    )
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    commit(repo, "forged", "w1")
    started = time.monotonic()
    r = ftc("compile", job(initial_base_model_ckpt_path=tracked("weights", rev="w1")), "-o", tmp_path / "p.json")
    assert time.monotonic() - started < 30
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "weights: its DVC .dir listing is not one" in r.err and "Traceback" not in r.err


def test_bytes_in_the_remote_that_do_not_match_the_pinned_md5_are_refused(data_repo, job, ftc, tmp_path):
    assert ftc("compile", job(train_path=tracked(rev="v2")), "-o", tmp_path / "p.json").code == 0
    md5 = read_json(tmp_path / "p.json")["inputs"]["train"]["pin"]["md5"]
    stored = tmp_path / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]
    stored.chmod(0o644)
    stored.write_text(stored.read_text().replace("1", "2"))
    cache = Path(os.environ["FTC_CACHE_DIR"])
    shutil.rmtree(cache)
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert f"train: {stored} is not the bytes the plan pins" in r.err and f"expected md5:{md5}" in r.err
    assert not (tmp_path / "output").exists()
    assert not list((cache / "objects").rglob("*")) and not list((cache / "partial").glob("*"))


def test_data_gone_from_the_remote_after_compiling_stops_the_run(data_repo, job, ftc, tmp_path):
    assert ftc("compile", job(train_path=tracked(rev="v2")), "-o", tmp_path / "p.json").code == 0
    md5 = read_json(tmp_path / "p.json")["inputs"]["train"]["pin"]["md5"]
    (tmp_path / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).unlink()  # as `dvc gc --cloud` would
    shutil.rmtree(os.environ["FTC_CACHE_DIR"])
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert "the pinned file is gone" in r.err and not (tmp_path / "output").exists()


def test_weights_and_adapter_in_s3_data_in_dvc_on_s3_validation_in_gcs(
    s3, s3_server, gcs, job, ftc, tmp_path, tiny_model, tiny_adapter
):
    upload_folder(s3, tiny_model, s3.bucket, "weights")
    upload_folder(s3, tiny_adapter, s3.bucket, "adapters/first")
    new_data_repo(tmp_path, remote=f"s3://{s3.bucket}/dvc", endpoint=s3_server)
    write_jsonl(tmp_path / "valid.jsonl", arithmetic_examples(4, seed=2))
    gcs.bucket(gcs.bucket_name).blob("eval/valid.jsonl").upload_from_filename(str(tmp_path / "valid.jsonl"))
    spec = job(
        initial_base_model_ckpt_path=f"s3://{s3.bucket}/weights/",
        initial_adapter_model_ckpt_path=f"s3://{s3.bucket}/adapters/first/",
        train_path=tracked(rev="v2"),
        valid_path=f"gs://{gcs.bucket_name}/eval/valid.jsonl",
        lora_config=None,
        num_epochs=1,
    )
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "p.json")
    assert {role: item["source"] for role, item in plan["inputs"].items()} == {
        "base_model": "s3",
        "adapter": "s3",
        "train": "dvc",
        "valid": "gcs",
    }
    assert (
        plan["inputs"]["train"]["pin"]["remote"] == f"s3://{s3.bucket}/dvc" and plan["inputs"]["train"]["records"] == 40
    )
    shutil.rmtree(os.environ["FTC_CACHE_DIR"])
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    out = tmp_path / "output"
    assert (out / "best" / "adapter_model.safetensors").exists()
    assert [m["step"] for m in metrics(out, "eval")] == [0, 10]
    logs = r.out + r.err
    for path in [tmp_path / "p.json", *(p for p in out.rglob("*") if p.is_file())]:
        assert S3_SECRET.encode() not in path.read_bytes() and S3_KEY.encode() not in path.read_bytes(), path
    assert S3_SECRET not in logs and S3_KEY not in logs
    assert json.loads((out / "best" / "adapter_config.json").read_text())["r"] > 0


def test_a_credential_in_a_dvc_remotes_endpointurl_never_reaches_a_plan(s3, s3_server, job, ftc, tmp_path):
    repo = new_data_repo(tmp_path, remote=f"s3://{s3.bucket}/dvc", endpoint=s3_server)
    secret = "endpoint-pa55/w@rd"
    dvc(repo, "remote", "modify", "store", "endpointurl", s3_server.replace("://", f"://minio:{secret}@"))
    commit(repo, "an endpoint with a password in it", "v3")
    plan = tmp_path / "p.json"
    r = ftc("compile", job(train_path=tracked(rev="v3"), lora_config=None, num_epochs=1), "-o", plan)
    assert r.code == ExitCode.INPUT_UNCONFIGURED, r.err
    assert "the DVC remote 'store' at v3 has a credential in its endpointurl (http://***@127.0.0.1:" in r.err
    assert "dvc remote modify store endpointurl" in r.err
    assert secret not in r.err + r.out and "pa55" not in r.err + r.out
    assert not plan.exists()


def test_a_dvc_variable_in_output_dir_runs_nothing_under_dvc_repro(job, ftc, tmp_path, tiny_model, monkeypatch):
    """A params.yaml value holding shell code, named by ${x} in output_dir: `dvc repro` of the stage ftc writes
    trains into a folder literally named runs/${x}; the code never runs (a stage written raw, beside it, shows what
    DVC would otherwise do with it)."""
    import yaml

    repo = new_repo(tmp_path / "pipeline")
    shutil.copytree(tiny_model, repo / "model")
    shutil.copytree(tmp_path / "data", repo / "data")
    (repo / "params.yaml").write_text("x: \"'; touch INJECTED; echo '\"\ny: \"'; touch CONTROL; echo '\"\n")
    spec = job(initial_base_model_ckpt_path="model", output_dir="runs/${x}", num_epochs=1)
    shutil.move(spec, repo / "job.yaml")
    monkeypatch.chdir(repo)
    r = ftc("compile", "job.yaml", "-o", "plan.json", "--emit", "dvc", "--dvc-stage", "train")
    assert r.code == 0, r.err
    document = yaml.safe_load((repo / "dvc.yaml").read_text())
    document["stages"]["control"] = {"cmd": "echo '${y}'"}  # raw: what an unescaped ${ does
    (repo / "dvc.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    commit(repo, "pipeline")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "CONTROL").exists()  # DVC here does interpolate an unescaped ${...} into a command
    assert not (repo / "INJECTED").exists()
    assert (repo / "runs" / "${x}" / "checkpoints").is_dir() and (repo / "runs" / "${x}" / "summary.json").is_file()
    assert "verified: " in done.stdout + done.stderr


def test_a_dvc_folder_listing_naming_a_file_with_a_newline_is_refused(tmp_path, job, ftc):
    repo = new_repo(tmp_path / "datasets")
    listing = json.dumps([{"md5": "0" * 32, "relpath": f"tokenizer.json\n{'0' * 64}  tokenizer_config.json"}]).encode()
    md5 = hashlib.md5(listing).hexdigest()
    for store in (tmp_path / "dvc-remote", repo / ".dvc" / "cache"):
        stored = store / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
        stored.parent.mkdir(parents=True)
        stored.write_bytes(listing)
    (repo / "weights.dvc").write_text(
        f"outs:\n- md5: {md5}.dir\n  size: 1\n  nfiles: 1\n  hash: md5\n  path: weights\n"
    )
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    commit(repo, "a listing with a newline in a name", "w1")
    r = ftc("compile", job(initial_base_model_ckpt_path=tracked("weights", rev="w1")), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "weights (its DVC listing): the file name 'tokenizer.json\\n000" in r.err and "holds a control" in r.err
    assert "then `dvc add` the folder again" in r.err and "Traceback" not in r.err
