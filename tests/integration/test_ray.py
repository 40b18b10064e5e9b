"""`ftc run --backend ray` on a real Ray cluster started by the tests: a head node and a second node on this machine
(`ray start --block` twice, one CPU each, a token of their own; support/ray_cluster.py), Ray Train placing the
plan's workers (gloo), each running ftc's own recipe."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import S3_KEY, S3_SECRET, read_json

pytestmark = pytest.mark.slow

TWO_WORKERS = dict(lora_config=None, num_epochs=2, train_batch_size_per_device=4, num_devices=2)
#: what llmforge's Llama Guard 2 config asks each worker for (an accelerator shape of Anyscale's clusters)
SHAPE = "anyscale/accelerator_shape:4xA10G"


@pytest.fixture(scope="module")
def ray_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def cluster(ray_root, s3_server):
    pytest.importorskip("ray.train", reason="pip install 'ftc[ray]'")
    from support.ray_cluster import start_ray_cluster

    (ray_root / "tmp").mkdir()
    # the workers' ftc cache, temporary folder and S3 credentials: the raylets' environment is the one they were
    # started with (as on a real cluster, where the nodes have their own credentials: ftc sends none to them)
    env = {
        "FTC_CACHE_DIR": str(ray_root / "cache"),
        "TMPDIR": str(ray_root / "tmp"),
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # every node offers the resource llmforge's Llama Guard 2 config asks each worker for (not accelerator_type:A10G)
    started = start_ray_cluster(ray_root, nodes=2, env=env, resources={SHAPE: 1})
    yield started
    started.stop()


def ftc_cli(*args, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ftc ARGS`` in a process of its own; ``env``: its environment (a cluster's ``environ()``: with its token)."""
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def _compiled(job, ftc, tmp_path: Path, name: str, **settings) -> Path:
    plan = tmp_path / f"{name}.json"
    r = ftc("compile", job(name=f"{name}.yaml", output_dir=f"out-{name}", **settings), "-o", plan)
    assert r.code == 0, r.err
    return plan


def _train_workers() -> list[int]:
    """The pids of Ray Train's worker processes on this machine (Ray names them ray::RayTrainWorker)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any("ray::RayTrainWorker" in part for part in proc.info["cmdline"] or ()):
            found.append(proc.info["pid"])
    return sorted(found)


def _weights(out: Path) -> str:
    return hashlib.sha256((out / "best" / "model.safetensors").read_bytes()).hexdigest()


def _losses(out: Path) -> list[tuple[int, str, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["type"], r.get("loss", r.get("eval_loss"))) for r in rows]


#: what Ray itself prints, which a user of ftc should not have to read: its prefixes of forwarded output (a worker's,
#: the controller's, Ray Train's placement group cleaner's), its log lines and warnings, tracebacks
RAY_NOISE = re.compile(
    r"\((RayTrainWorker|TrainController|PlacementGroupCleaner|pid=)|PlacementGroupCleaner|Traceback"
    r"|\b(DEBUG|INFO|WARNING|ERROR) \w+\.py:\d+ -- |\] \w+\.cc:\d+:|\[repeated \d+x across cluster\]|\x1b\["
)


def _reads_like_a_local_run(output: str, last_checkpoint: Path) -> Path:
    """The run's output shows each progress line once and nothing of Ray's, ends naming its checkpoint by an
    absolute path and then the log that holds Ray's messages; returns that log."""
    lines = output.splitlines()
    steps = [line for line in lines if line.startswith("[ftc] step ")]
    assert steps and len(steps) == len(set(steps)), "\n".join(steps)  # each progress line once
    for seen in ("[ftc] done: ", "[ftc] eval loss before training"):
        assert sum(seen in line for line in lines) == 1, output
    assert [line for line in lines if RAY_NOISE.search(line)] == []
    final = [line for line in lines if line.startswith("[ftc] checkpoint (best eval loss): ")]
    assert final == [f"[ftc] checkpoint (best eval loss): {last_checkpoint.resolve()}"], output
    found = re.fullmatch(r"ray: Ray's own messages and every worker's output are in (/\S+\.log)", lines[-1])
    assert found, lines[-3:]
    log = Path(found.group(1))
    assert "TrainController" in log.read_text()  # what Ray said is kept, out of the way
    return log


def test_a_two_worker_plan_on_ray_trains_as_the_local_two_process_run(cluster, job, ftc, tmp_path):
    on_ray = _compiled(job, ftc, tmp_path, "ray", **TWO_WORKERS)
    local = _compiled(job, ftc, tmp_path, "local", **TWO_WORKERS)
    r = ftc_cli("run", on_ray, "--backend", "ray", "--address", cluster.address, env=cluster.environ())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"ray: 2 worker(s) (a CPU each) on the cluster at {cluster.address}" in r.stderr
    _reads_like_a_local_run(r.stdout + r.stderr, tmp_path / "out-ray" / "checkpoints" / "step-000004")
    assert ftc("run", local).code == 0
    assert _losses(tmp_path / "out-ray") == _losses(tmp_path / "out-local")
    assert _weights(tmp_path / "out-ray") == _weights(tmp_path / "out-local")  # bitwise, as on one machine
    record = read_json(tmp_path / "out-ray" / "best" / "lineage.json")
    assert record["execution"]["world_size"] == 2
    assert ftc("lineage", "verify", tmp_path / "out-ray").code == 0


def test_a_preference_plan_on_ray_runs_the_dpo_recipe_as_the_local_two_process_run(cluster, job, ftc, tmp_path):
    from support.models import write_jsonl
    from support.preference import preference_pairs

    write_jsonl(tmp_path / "pairs.jsonl", preference_pairs(16, seed=1))
    write_jsonl(tmp_path / "pairs-valid.jsonl", preference_pairs(6, seed=2))  # 3 per worker: each gathers the other's
    dpo = dict(TWO_WORKERS, train_path="pairs.jsonl", valid_path="pairs-valid.jsonl", preference_tuning_config={})
    on_ray = _compiled(job, ftc, tmp_path, "dpo-ray", **dpo)
    local = _compiled(job, ftc, tmp_path, "dpo-local", **dpo)
    r = ftc_cli("run", on_ray, "--backend", "ray", "--address", cluster.address, env=cluster.environ())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "reference log-probabilities of the train pairs computed" in r.stderr
    assert ftc("run", local).code == 0
    assert _losses(tmp_path / "out-dpo-ray") == _losses(tmp_path / "out-dpo-local")
    assert _weights(tmp_path / "out-dpo-ray") == _weights(tmp_path / "out-dpo-local")
    ray_pins, local_pins = (
        {d["role"]: d["reference_logprobs"] for d in read_json(tmp_path / out / "best" / "lineage.json")["datasets"]}
        for out in ("out-dpo-ray", "out-dpo-local")
    )
    assert ray_pins == local_pins and ray_pins["valid"]["pairs"] == 6
    first = _losses(tmp_path / "out-dpo-local")[0]  # each pair's reference gathered from the rank that computed it:
    assert first[1] == "eval" and abs(first[2] - math.log(2)) < 1e-6  # the model before training is its reference


def test_a_killed_worker_is_restarted_and_the_run_resumes_to_the_same_weights(cluster, ray_root, job, ftc, tmp_path):
    from support.models import arithmetic_examples, write_jsonl

    write_jsonl(tmp_path / "data" / "more.jsonl", arithmetic_examples(128, seed=5))  # 32 steps an epoch
    longer = {**TWO_WORKERS, "train_batch_size_per_device": 2, "train_path": "data/more.jsonl"}
    plan = _compiled(job, ftc, tmp_path, "ray", **longer)
    whole = _compiled(job, ftc, tmp_path, "whole", **longer)
    assert ftc("run", whole).code == 0
    out = tmp_path / "out-ray"
    temporary = ray_root / "tmp"  # the workers' temporary folder (TMPDIR), the driver's too
    before = set(temporary.iterdir())
    driver = subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", "run", plan, "--backend", "ray", "--address", cluster.address,
         "--max-failures", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**cluster.environ(), "TMPDIR": str(temporary)},
    )  # fmt: skip
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and driver.poll() is None:
        steps = [r[0] for r in _losses(out) if r[1] == "train"] if (out / "metrics.jsonl").exists() else []
        checkpoint = any((out / "checkpoints").glob("step-*")) if (out / "checkpoints").exists() else False
        if checkpoint and steps and max(steps) > 36:  # mid-epoch 2, after the first checkpoint
            pids = _train_workers()
            if pids:
                killed = pids[-1]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    output, _ = driver.communicate(timeout=600)
    assert killed is not None, output[-3000:]
    assert driver.returncode == 0, output[-5000:]
    assert "resuming from step-000032" in output  # the restarted group resumed from the newest checkpoint
    assert _weights(out) == _weights(tmp_path / "out-whole")  # bitwise, as the local resume is
    train_steps = [r[0] for r in _losses(out) if r[1] == "train"]
    assert train_steps == sorted(set(train_steps))  # the metrics of the lost steps were not kept twice
    # the killed worker, its restarted group and the driver left no temporary file behind
    assert sorted(p.name for p in set(temporary.iterdir()) - before) == []
    assert [line for line in output.splitlines() if RAY_NOISE.search(line)] == []  # nor Ray's words about the kill


def test_ctrl_c_on_the_driver_stops_the_job_on_the_cluster(cluster, job, ftc, tmp_path):
    plan = _compiled(
        job, ftc, tmp_path, "ray", **{**TWO_WORKERS, "num_epochs": 300}
    )  # minutes: still running at Ctrl-C
    driver = subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", "run", plan, "--backend", "ray", "--address", cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.environ(),
    )  # fmt: skip
    out = tmp_path / "out-ray"
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == ExitCode.INTERRUPTED, output[-3000:]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = _train_workers()
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"Ray Train workers still running after Ctrl-C: {left}"


def test_no_cluster_at_the_address_is_exit_13_at_once(job, ftc, tmp_path):
    pytest.importorskip("ray.train", reason="pip install 'ftc[ray]'")
    plan = _compiled(job, ftc, tmp_path, "ray", **TWO_WORKERS)
    started = time.monotonic()
    r = ftc_cli("run", plan, "--backend", "ray", "--address", "127.0.0.1:1", timeout=120)
    assert r.returncode == ExitCode.ENGINE_UNAVAILABLE, r.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in r.stderr and "ray start --head" in r.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out-ray").exists()


def test_a_driver_without_the_clusters_token_is_refused_naming_the_token(cluster, job, ftc, tmp_path):
    plan = _compiled(job, ftc, tmp_path, "ray", **TWO_WORKERS)
    tokenless = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = ftc_cli("run", plan, "--backend", "ray", "--address", cluster.address, env=tokenless, timeout=300)
    assert r.returncode == ExitCode.ENGINE_UNAVAILABLE, r.stderr[-3000:]
    assert f"the Ray cluster at {cluster.address} refused this driver: it asks for an authentication token" in r.stderr
    assert "fix: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in r.stderr
    assert "InvalidAuthToken" not in r.stderr  # Ray's retries (a warning a second) went to its log, not to the user
    assert not (tmp_path / "out-ray").exists()


def test_a_workers_error_comes_back_with_its_exit_code_and_message(cluster, job, ftc, tmp_path):
    plan = _compiled(job, ftc, tmp_path, "ray", **{**TWO_WORKERS, "context_length": 16})  # the examples are longer
    r = ftc_cli("run", plan, "--backend", "ray", "--address", cluster.address, env=cluster.environ())
    assert r.returncode == ExitCode.DATA_INVALID, r.stdout[-2000:] + r.stderr[-3000:]
    assert "longer than context_length 16" in r.stderr and "skip_bad_examples" in r.stderr
    assert "Traceback" not in r.stderr.split("FTC-ERROR")[-1]  # ftc's message, not Ray's traceback, ends the output


def test_a_multi_node_plan_is_refused_before_the_cluster_is_asked(job, ftc, tmp_path):
    pytest.importorskip("ray.train", reason="pip install 'ftc[ray]'")
    plan = _compiled(job, ftc, tmp_path, "ray", **{**TWO_WORKERS, "num_nodes": 2})
    r = ftc_cli("run", plan, "--backend", "ray", "--address", "127.0.0.1:1", timeout=120)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "--backend ray places the plan's processes itself" in r.stderr and "2 nodes of 1" in r.stderr


def test_without_ray_installed_the_backend_says_what_to_install(job, ftc, tmp_path):
    # Ray is installed here; the child process is made to find none (an import of ray fails, as without the package)
    plan = _compiled(job, ftc, tmp_path, "ray", **TWO_WORKERS)
    probe = (
        "import sys\nsys.modules['ray'] = None\nfrom ftc.cli import _entry\n"
        f"sys.argv = ['ftc', 'run', {str(plan)!r}, '--backend', 'ray']\n_entry()"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "--backend ray needs Ray Train: pip install 'ftc[ray]'" in r.stderr


def test_output_dir_in_s3_on_ray_is_published_by_the_rank_0_worker(cluster, s3, job, ftc, tmp_path):
    prefix = f"s3://{s3.bucket}/runs/ray/"
    plan = tmp_path / "p.json"
    assert ftc("compile", job(output_dir=prefix, **TWO_WORKERS), "-o", plan).code == 0
    r = ftc_cli("run", plan, "--backend", "ray", "--address", cluster.address, env=cluster.environ())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix="runs/ray/")["Contents"]]
    markers = sorted(k for k in keys if k.endswith(".complete"))
    assert markers == ["runs/ray/checkpoints/step-000002.complete", "runs/ray/checkpoints/step-000004.complete"]
    last = json.loads(s3.get_object(Bucket=s3.bucket, Key=markers[-1])["Body"].read())
    assert last["last"] is True and "runs/ray/summary.json" in keys
    record = json.loads(
        s3.get_object(Bucket=s3.bucket, Key="runs/ray/checkpoints/step-000004/lineage.json")["Body"].read()
    )
    assert record["execution"]["world_size"] == 2 and record["record_id"] == last["record_id"]
    # the driver reads the store to know the run ended: a second run of the plan says so, and trains nothing
    r = ftc_cli("run", plan, "--backend", "ray", "--address", cluster.address, "--resume", env=cluster.environ())
    assert r.returncode == 0 and "the run is complete" in r.stderr, r.stderr[-3000:]


# llmforge's Llama Guard 2 config, verbatim but for its model (a tiny Llama) and, for the cluster's 2 CPUs, 2 workers
# instead of 4: its worker_resources are asked of Ray for each worker
ON_TWO_CPUS = {"num_devices: 4\n": "num_devices: 2\n"}


def test_the_llama_guard_2_config_runs_where_the_cluster_offers_its_worker_resources(cluster, tmp_path):
    from support.llmforge import llama_guard_2_job

    spec = llama_guard_2_job(tmp_path, replace=ON_TWO_CPUS)
    assert ftc_cli("compile", spec, "-o", tmp_path / "p.json").returncode == 0
    r = ftc_cli("run", tmp_path / "p.json", "--backend", "ray", "--address", cluster.address, env=cluster.environ())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"ray: each worker asks for {{CPU: 1, {SHAPE}: 0.001}}" in r.stderr
    plan = read_json(tmp_path / "output" / "best" / "plan.json")
    assert plan["spec"]["worker_resources"] == {SHAPE: 0.001}
    assert read_json(tmp_path / "output" / "best" / "lineage.json")["execution"]["world_size"] == 2


def test_a_worker_resource_no_node_offers_is_exit_13_within_seconds_naming_it(cluster, tmp_path):
    from support.llmforge import llama_guard_2_job

    absent = {**ON_TWO_CPUS, f"  {SHAPE}: 0.001\n": "  accelerator_type:A10G: 0.001\n"}  # llmforge's other form
    spec = llama_guard_2_job(tmp_path, replace=absent)
    assert ftc_cli("compile", spec, "-o", tmp_path / "p.json").returncode == 0
    started = time.monotonic()
    r = ftc_cli(
        "run", tmp_path / "p.json", "--backend", "ray", "--address", cluster.address, timeout=120, env=cluster.environ()
    )
    assert r.returncode == ExitCode.ENGINE_UNAVAILABLE, r.stderr[-3000:]
    assert time.monotonic() - started < 60  # the driver's start-up and Ray's connect; nothing is submitted
    assert (
        f"the Ray cluster at {cluster.address} has no node that offers accelerator_type:A10G 0.001 (each worker)"
        in r.stderr
    )
    assert f"the cluster has: {{CPU: 2, {SHAPE}: 2," in r.stderr and "ftc_node_1: 1" in r.stderr
    assert not (tmp_path / "output").exists()
