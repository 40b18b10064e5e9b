"""Container runs on a real engine: Debian's dockerd on a private socket, a real registry (docker-registry) on
127.0.0.1, and a Debian base image made with debootstrap (no registry can be pulled from here).

The test image is that base plus a .pth file that puts this environment's site-packages on its Python's path; the
runs mount this checkout and environment read-only (``--mount``). Nothing can be pip-installed into an image offline
here, so the image borrows the tested Python stack instead of carrying its own; everything else (pinning, pulling by
digest, mounts, uid, logs, exit codes, cleanup, lineage) is the real path.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import REPO, S3_KEY, S3_SECRET, read_json, upload_folder

pytestmark = pytest.mark.slow

IMAGE = "ftc-test:cpu"
NO_ENGINE = "unix:///nonexistent/docker.sock"


def _unavailable(reason: str):
    if os.environ.get("FTC_TEST_REQUIRE_ENGINE"):  # CI installs the engine: there, a missing one is a failure
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine():
    """A real dockerd on a unix socket, with the test image built in it."""
    docker = pytest.importorskip("docker")
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("debootstrap") is None:
        _unavailable("needs root, dockerd and debootstrap (Debian: apt-get install docker.io debootstrap)")
    from support.servers import debian_rootfs_tar, start_dockerd

    root = Path(tempfile.mkdtemp(prefix="ftc-dockerd-", dir="/tmp"))  # short: a unix socket path has 107 bytes
    proc, host = start_dockerd(root)
    try:
        client = docker.DockerClient(base_url=host, timeout=120)
        tar = debian_rootfs_tar(REPO / ".ftc-test-assets" / "debian-bookworm-python3.tar")
        client.api.import_image(src=str(tar), repository="ftc-test-base", tag="bookworm")
        context = root / "image"
        context.mkdir()
        site = sysconfig.get_paths()["purelib"]
        (context / "ftc-dev.pth").write_text(f"import site; site.addsitedir({site!r})\n")
        (context / "Dockerfile").write_text(
            "FROM ftc-test-base:bookworm\n"
            "COPY ftc-dev.pth /usr/local/lib/python3.11/dist-packages/ftc-dev.pth\n"
            "RUN ln -s /usr/bin/python3 /usr/local/bin/python\n"
            'ENTRYPOINT ["python", "-m", "ftc.runtime"]\n'
        )
        client.images.build(path=str(context), tag=IMAGE, network_mode="none", rm=True)
        yield type("Engine", (), {"host": host, "client": client, "mounts": sorted({str(REPO), sys.prefix})})
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory):
    from support.servers import start_registry

    proc, address = start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    proc.kill()
    proc.wait()


def ftc_cli(*args, host: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def run_args(engine, plan: Path, *extra) -> list:
    return ["run", plan, *extra, *[a for m in engine.mounts for a in ("--mount", m)]]


def ftc_in_background(engine, plan: Path) -> subprocess.Popen:
    """`ftc run PLAN` against the test engine, running on; its stderr piped (stdout dropped)."""
    env = {**os.environ, "DOCKER_HOST": engine.host}
    command = [sys.executable, "-m", "ftc.cli", *map(str, run_args(engine, plan))]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def containers_of(engine, plan: Path) -> list:
    plan_id = read_json(plan)["plan_id"]
    # sparse: the list alone, no per-container inspect, which races with ftc removing a container that just exited
    return engine.client.containers.list(all=True, sparse=True, filters={"label": f"dev.ftc.plan-id={plan_id}"})


def checkpoint_of(plan: Path) -> Path:
    output = plan.parent / read_json(plan)["output"]["dir"]
    return (output / "best").resolve()


def test_the_quickstart_in_a_local_image_pinned_by_id_writes_the_callers_checkpoint(engine, tmp_path):
    quickstart = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", quickstart, ignore=shutil.ignore_patterns("output"))
    spec = quickstart / "job.yaml"
    spec.write_text(
        spec.read_text().replace("output_dir: ../../runs/quickstart", "output_dir: run") + f"image: {IMAGE}\n"
    )
    plan = quickstart / "plan.json"
    r = ftc_cli("compile", spec, "-o", plan, host=engine.host)
    assert r.returncode == 0, r.stderr
    image = read_json(plan)["image"]
    local_id = engine.client.images.get(IMAGE).id
    assert image == {"ref": local_id, "requested": IMAGE, "pinned": True, "pin_kind": "image-id", "digest": local_id}
    assert "pinned by its local image ID" in r.stderr

    r = ftc_cli(*run_args(engine, plan), host=engine.host)  # auto: the plan names an image and the engine answers
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"backend: docker (the plan names image {IMAGE} and the engine at {engine.host} answers)" in r.stderr
    assert "[ftc] done: 3 epoch(s)" in r.stdout + r.stderr  # the container's log came through
    checkpoint = checkpoint_of(plan)
    assert checkpoint.parent == quickstart / "run" / "checkpoints"
    record = read_json(checkpoint / "lineage.json")
    ran = record["environment"]["image"]
    assert (ran["id"], ran["requested"], ran["pinned"]) == (local_id, IMAGE, True)
    assert all(p.stat().st_uid == os.getuid() and p.stat().st_gid == os.getgid() for p in checkpoint.iterdir())
    assert containers_of(engine, plan) == []
    assert ftc_cli("lineage", "verify", checkpoint, host=engine.host).returncode == 0


def test_a_pushed_image_is_pinned_by_registry_digest_and_pulled_by_digest(engine, registry, job, tmp_path):
    tag = f"{registry}/ftc-test:pushed"
    context = tmp_path / "variant"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL dev.ftc.test=pushed\n")
    engine.client.images.build(path=str(context), tag=tag, network_mode="none", rm=True)
    engine.client.images.push(f"{registry}/ftc-test", tag="pushed")
    plan = tmp_path / "plan.json"
    r = ftc_cli("compile", job(image=tag), "-o", plan, host=engine.host)
    assert r.returncode == 0, r.stderr
    image = read_json(plan)["image"]
    assert image["pin_kind"] == "repo-digest" and image["ref"] == f"{registry}/ftc-test@{image['digest']}"

    engine.client.images.remove(tag, force=True)  # the run must pull it, by digest
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = read_json(checkpoint_of(plan) / "lineage.json")["environment"]["image"]
    assert image["ref"] in ran["repo_digests"]


def test_a_digest_the_registry_does_not_have_is_refused(engine, registry, job, tmp_path):
    plan = tmp_path / "plan.json"
    missing = f"{registry}/ftc-test@sha256:{'0' * 64}"
    assert ftc_cli("compile", job(image=missing), "-o", plan, host=engine.host).returncode == 0  # pinned already
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 4, r.stderr
    assert f"image {missing}: not in the engine, and pulling it by digest failed" in r.stderr


def test_an_image_nobody_has_cannot_be_pinned_unless_allowed(engine, job, tmp_path):
    spec = job(image="ftc-missing:nope")
    r = ftc_cli("compile", spec, "-o", tmp_path / "plan.json", host=engine.host)
    assert r.returncode == 4
    assert "image ftc-missing:nope: not in the engine" in r.stderr
    assert "or compile with --allow-unpinned" in r.stderr
    assert not (tmp_path / "plan.json").exists()

    r = ftc_cli("compile", spec, "-o", tmp_path / "plan.json", "--allow-unpinned", host=engine.host)
    assert r.returncode == 0
    assert read_json(tmp_path / "plan.json")["image"]["pinned"] is False
    assert "runs of this plan are not reproducible" in r.stderr
    r = ftc_cli(*run_args(engine, tmp_path / "plan.json", "--backend", "docker"), host=engine.host)
    assert r.returncode == 4
    assert "does not have ftc-missing:nope" in r.stderr


def test_without_an_engine(engine, job, tmp_path):
    spec = job(image=IMAGE)
    r = ftc_cli("compile", spec, "-o", tmp_path / "plan.json", host=NO_ENGINE)
    assert r.returncode == 13
    assert f"no container engine answers at {NO_ENGINE}" in r.stderr

    # compiled where no engine answers: the tag stays, the plan and the run's lineage say it is not reproducible
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", spec, "-o", plan, "--allow-unpinned", host=NO_ENGINE).returncode == 0
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=NO_ENGINE)
    assert r.returncode == 13
    assert "ftc run --backend docker: no container engine answers" in r.stderr
    r = ftc_cli(*run_args(engine, plan), host=engine.host)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = read_json(checkpoint_of(plan) / "lineage.json")["environment"]["image"]
    assert ran["pinned"] is False and "not reproducible" in ran["note"]
    shown = ftc_cli("lineage", "show", checkpoint_of(plan), host=engine.host).stdout
    assert f"image {IMAGE} (sha256:" in shown and "NOT reproducible: unpinned image" in shown


def test_asking_for_gpus_the_engine_cannot_give(engine, job, tmp_path):
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE), "-o", plan, host=engine.host).returncode == 0
    r = ftc_cli(*run_args(engine, plan, "--gpus", "1"), host=engine.host)
    assert r.returncode == 13
    assert "--gpus 1: the engine at" in r.stderr and "cannot give containers GPUs" in r.stderr
    assert "run on CPU with --gpus none" in r.stderr
    assert containers_of(engine, plan) == []


def test_stopping_ftc_run_removes_the_container(engine, job, tmp_path):
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE, num_epochs=2000), "-o", plan, host=engine.host).returncode == 0
    proc = ftc_in_background(engine, plan)
    deadline = time.time() + 120
    while not any(c.status == "running" for c in containers_of(engine, plan)):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the container never started"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    assert containers_of(engine, plan) == []


def test_a_container_left_training_by_a_killed_ftc_run_is_named_and_blocks_every_other_run(engine, job, tmp_path):
    """kill -9 of `ftc run` cannot remove its container: the next run into that folder, in a container or not, is
    refused naming the container and the `docker rm -f` that stops it; once it is gone, the folder is free."""
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE, num_epochs=2000), "-o", plan, host=engine.host).returncode == 0
    proc = ftc_in_background(engine, plan)
    output = plan.parent / read_json(plan)["output"]["dir"]
    lock = output / ".ftc-lock-node0"
    deadline = time.time() + 120
    while not (lock.exists() and lock.stat().st_size):  # the container holds the output folder's lock
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the container never took the lock"
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    (left,) = containers_of(engine, plan)
    name = left.attrs["Names"][0].lstrip("/")
    assert name.startswith("ftc-") and name.endswith("-node0")
    try:
        for args in (run_args(engine, plan, "--resume"), ["run", plan, "--resume", "--backend", "local"]):
            r = ftc_cli(*args, host=engine.host, timeout=120)
            assert r.returncode == ExitCode.USAGE, r.stderr[-3000:]
            assert f"container {name}" in r.stderr and f"`docker rm -f {name}`" in r.stderr, r.stderr[-3000:]
            assert "ftc run PLAN --resume" in r.stderr
        assert len(containers_of(engine, plan)) == 1  # the refused container run started nothing
    finally:
        engine.client.api.remove_container(left.id, force=True)
    deadline = time.time() + 30
    while True:  # the kernel releases the lock with its holder
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.time() < deadline, "the lock outlived the container"
            time.sleep(0.5)
        finally:
            os.close(fd)


def test_lineage_records_no_image_for_a_local_run_of_a_plan_that_names_one(engine, job, tmp_path):
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE), "-o", plan, host=engine.host).returncode == 0
    r = ftc_cli("run", plan, "--backend", "local", host=engine.host)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "backend: local (--backend local)" in r.stderr
    assert "image" not in read_json(checkpoint_of(plan) / "lineage.json")["environment"]


def test_image_build_tags_the_image_from_a_checkout(engine, tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "images").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "images" / "Dockerfile.cpu").write_text(
        "FROM ftc-test-base:bookworm\nARG FLAVOUR\nLABEL dev.ftc.flavour=$FLAVOUR\n"
    )
    r = ftc_cli(
        "image",
        "build",
        "cpu",
        "--context",
        checkout,
        "-t",
        "ftc-built:test",
        "--build-arg",
        "FLAVOUR=cpu",
        host=engine.host,
    )
    assert r.returncode == 0, r.stderr
    built = engine.client.images.get("ftc-built:test")
    assert built.labels["dev.ftc.flavour"] == "cpu"
    assert f"built ftc-built:test ({built.id}, {built.attrs['Size'] / 1e9:.2f} GB) in " in r.stdout


def test_image_build_says_how_compile_will_pin_the_image(engine, registry, job, tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "images").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "images" / "Dockerfile.cpu").write_text("FROM ftc-test-base:bookworm\nLABEL dev.ftc.test=pin\n")
    tag = f"{registry}/ftc-built:pin"
    build = ("image", "build", "cpu", "--context", checkout, "-t", tag)
    r = ftc_cli(*build, host=engine.host)
    assert r.returncode == 0, r.stderr
    assert "`ftc compile` pins it by its image ID, which only this engine has: push it to a registry" in r.stdout
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=tag), "-o", plan, host=engine.host).returncode == 0
    assert read_json(plan)["image"]["pin_kind"] == "image-id"
    engine.client.images.push(f"{registry}/ftc-built", tag="pin")
    r = ftc_cli(*build, host=engine.host)  # the same image again (cached), which the registry now knows
    assert r.returncode == 0, r.stderr
    digest = engine.client.images.get(tag).attrs["RepoDigests"][0]
    assert f"`ftc compile` pins it by its registry digest ({digest})" in r.stdout
    assert ftc_cli("compile", job(image=tag), "-o", plan, host=engine.host).returncode == 0
    assert read_json(plan)["image"]["ref"] == digest


def test_a_failing_image_build_says_which_step(engine, tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "images").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "images" / "Dockerfile.cpu").write_text(
        "FROM ftc-test-base:bookworm\nRUN echo step-two-output && exit 3\n"
    )
    r = ftc_cli("image", "build", "cpu", "--context", checkout, host=engine.host)
    assert r.returncode == 14
    assert "error: building ftc-runtime:" in r.stderr and "returned a non-zero code: 3" in r.stderr
    assert "step-two-output" in r.stderr
    r = ftc_cli("image", "build", "cpu", "--context", tmp_path, host=engine.host)
    assert r.returncode == 2
    assert "not a checkout of ftc (no images/ and pyproject.toml there)" in r.stderr


def test_two_processes_in_one_container(engine, job, tmp_path):
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE, num_devices=2), "-o", plan, host=engine.host).returncode == 0
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = read_json(checkpoint_of(plan) / "lineage.json")
    assert record["execution"]["world_size"] == 2 and record["environment"]["image"]["requested"] == IMAGE
    assert containers_of(engine, plan) == []


def test_inputs_in_s3_train_in_a_container_that_gets_no_credentials(engine, s3, job, tmp_path, tiny_model):
    """The host checks and downloads remote inputs; the container reads them from the cache (no store client)."""
    upload_folder(s3, tiny_model, s3.bucket, "weights")
    spec = job(image=IMAGE, initial_base_model_ckpt_path=f"s3://{s3.bucket}/weights/")
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", spec, "-o", plan, host=engine.host).returncode == 0
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert read_json(checkpoint_of(plan) / "lineage.json")["environment"]["image"]["requested"] == IMAGE
    assert (
        f"s3://{s3.bucket}/weights/" in read_json(checkpoint_of(plan) / "lineage.json")["parents"][0]["source"]["uri"]
    )
    for path in [plan, *(p for p in (tmp_path / "output").rglob("*") if p.is_file())]:
        blob = path.read_bytes()
        assert S3_SECRET.encode() not in blob and S3_KEY.encode() not in blob, path
    assert S3_SECRET not in r.stdout + r.stderr and S3_KEY not in r.stdout + r.stderr


def test_output_dir_in_s3_is_published_by_the_host_not_the_container(engine, s3, job, tmp_path):
    """The container stages the checkpoints in the cache folder it shares with the host; the host, which has the
    credentials, uploads them (none go into the container)."""
    prefix = f"s3://{s3.bucket}/runs/in-docker/"
    plan = tmp_path / "plan.json"
    assert ftc_cli("compile", job(image=IMAGE, output_dir=prefix), "-o", plan, host=engine.host).returncode == 0
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix="runs/in-docker/")["Contents"]]
    markers = [k for k in keys if k.endswith(".complete")]
    assert markers and "runs/in-docker/summary.json" in keys
    step = markers[-1].removesuffix(".complete")
    record = json.loads(s3.get_object(Bucket=s3.bucket, Key=f"{step}/lineage.json")["Body"].read())
    assert record["environment"]["image"]["requested"] == IMAGE  # trained in the container, published from the host
    assert S3_SECRET not in r.stdout + r.stderr and S3_KEY not in r.stdout + r.stderr


def test_a_failure_in_the_container_comes_back_as_its_own_exit_code(engine, job, tmp_path):
    from support.models import arithmetic_examples, write_jsonl

    records = arithmetic_examples(4, seed=1)
    records[2]["messages"][1]["content"] = "9 " * 200
    write_jsonl(tmp_path / "long.jsonl", records)
    plan = tmp_path / "plan.json"
    assert (
        ftc_cli(
            "compile", job(image=IMAGE, train_path="long.jsonl", context_length=64), "-o", plan, host=engine.host
        ).returncode
        == 0
    )
    r = ftc_cli(*run_args(engine, plan, "--backend", "docker"), host=engine.host)
    assert r.returncode == 7, r.stderr[-3000:]  # data invalid, as on the host
    assert "long.jsonl:3: 216 tokens, longer than context_length 64" in r.stderr
    assert containers_of(engine, plan) == []
