"""The real runtime images: images/Dockerfile.cpu and images/Dockerfile.gpu built by ``ftc image build`` on a real
engine (Debian's dockerd), from a base made offline (images/debian-base.sh: debootstrap, Debian's Python 3.11), with
every Python package from a local package index of wheels downloaded from PyPI (no registry and no public index is
reached from inside the build; the GPU image's CUDA libraries are the nvidia-* wheels torch's CUDA build pins).

In each image the quickstart trains end to end through ``ftc run --backend docker`` (the GPU image on the CPU: torch's
CUDA build runs on a CPU too), and the GPU image proves the toolchain that Triton, Inductor and Liger need at run
time, with no GPU: a C extension compiled and imported by Triton's own builder (what its kernel launchers do),
``torch.compile`` of a small function on the CPU, ``import triton, liger_kernel, deepspeed``, DeepSpeed's op report.

The CPU image's tracker variant (``ftc image build cpu --tracker mlflow --tracker wandb --tracker tensorboard``)
carries exactly the pins, the trackers' too, and a docker run of the quickstart with ``logger: tensorboard`` writes
its event files. Each image is built when a test first needs it: ``-k "not gpu"`` builds the CPU images only.

Not in CI (~13 min here, with 8 GB of images): ``python -m pytest tests -m images``. The first run also downloads the
wheels (~3.2 GB) and makes the base (~1 min), into .ftc-test-assets/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ftc.images.lint import canonicalize_name, parse_pin_file, read_pyproject

from conftest import REPO, read_json

pytestmark = [pytest.mark.images, pytest.mark.slow]

ASSETS = REPO / ".ftc-test-assets"
BASE = "ftc-base:bookworm"
# the image's own probe of its toolchain, run with `python` as the entry point (the image's /opt/ftc environment)
TOOLCHAIN_PROBE = r"""
import json, os, shutil, subprocess, sys
import torch, triton, liger_kernel, deepspeed
from triton.runtime.build import compile_module_from_src

source = '''
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ftc_probe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_ftc_probe(void) { return PyModule_Create(&module); }
'''
launcher = compile_module_from_src(source, "ftc_probe")  # Triton's builder: the system C compiler and Python.h
compiled = torch.compile(lambda x: torch.sin(x) * 2 + x.cos())  # Inductor: C++ kernels built with g++ on a CPU
x = torch.randn(257)
torch.testing.assert_close(compiled(x), torch.sin(x) * 2 + x.cos())
from importlib.metadata import version
print(json.dumps({
    "uid": os.getuid(),
    "python": sys.version.split()[0],
    "cc": shutil.which("gcc"),
    "triton_launcher": launcher.answer(),
    "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
    "triton": triton.__version__, "liger_kernel": version("liger-kernel"), "deepspeed": deepspeed.__version__,
}))
"""


def _unavailable(reason: str):
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine():
    """A real dockerd on a private socket, with the offline base image imported."""
    docker = pytest.importorskip("docker")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("dockerd", "debootstrap", "docker")):
        _unavailable("needs root, dockerd, the docker client and debootstrap (Debian: docker.io debootstrap)")
    from support.servers import start_dockerd

    root = Path(tempfile.mkdtemp(prefix="ftc-images-", dir="/tmp"))  # short: a unix socket path has 107 bytes
    proc, host = start_dockerd(root)
    try:
        env = {**os.environ, "DOCKER_HOST": host}
        made = subprocess.run(
            ["bash", "images/debian-base.sh", BASE, str(ASSETS / "debian-bookworm-base.tar")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        yield type("Engine", (), {"host": host, "client": docker.DockerClient(base_url=host, timeout=600)})
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def _wheels(flavor: str) -> Path:
    """Every wheel the image installs, the tracker variant's included, downloaded here once per set of requirements
    and pins (PyPI, and the torch builds on this machine's disk that pip's configuration names), with DeepSpeed's
    wheel built from its sdist (it publishes no wheel)."""
    import hashlib

    from ftc.images.lint import tracker_extras

    folder = ASSETS / f"wheels-{flavor}"
    pins = REPO / ("images/versions.txt" if flavor == "cpu" else "images/versions-gpu.txt")
    project = read_pyproject(REPO)["project"]
    trackers = tracker_extras(parse_pin_file((REPO / "images/versions.txt").read_text()))
    extras = ("train", "s3", "gcs") + (("gpu",) if flavor == "gpu" else ()) + trackers
    wanted = "\n".join(project["dependencies"] + [r for x in extras for r in project["optional-dependencies"][x]])
    done = folder / f".complete-{hashlib.sha256((wanted + pins.read_text()).encode()).hexdigest()[:16]}"
    if done.exists():
        return folder
    requirements = folder / ".requirements.txt"
    folder.mkdir(parents=True, exist_ok=True)
    requirements.write_text(wanted + "\n")
    pip = [sys.executable, "-m", "pip", "-q"]
    for command in (
        [*pip, "wheel", "--no-deps", "-w", folder, "-c", pins, "deepspeed"],
        [*pip, "download", "--only-binary=:all:", "--find-links", folder, "-d", folder, "-c", pins, "-r", requirements],
    ):
        done_ = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=1800)
        assert done_.returncode == 0, done_.stderr[-3000:]
    done.touch()
    return folder


def ftc_cli(*args, host: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


class Images:
    """The images, each built when a test first asks for it by `ftc image build FLAVOR [--tracker ...] --base <offline
    base> --network host` with every package from a local index: what the build reported (tag, ID, size, seconds).
    The tracker variant reuses the plain image's torch layer (TRACKERS is declared after it), so it adds one
    install of the stack, not a second image from scratch."""

    def __init__(self, engine):
        self.engine = engine
        self.built: dict[tuple[str, tuple[str, ...]], dict] = {}

    def __getitem__(self, flavor: str) -> dict:
        return self.get(flavor)

    def get(self, flavor: str, trackers: tuple[str, ...] = ()) -> dict:
        if (flavor, trackers) not in self.built:
            self.built[flavor, trackers] = self._build(flavor, trackers)
        return self.built[flavor, trackers]

    def _build(self, flavor: str, trackers: tuple[str, ...]) -> dict:
        from support.servers import serve_wheel_index

        server, url = serve_wheel_index(_wheels(flavor))
        try:
            args = ["--build-arg", f"PIP_INDEX_URL={url}"]
            if flavor == "cpu":
                args += ["--build-arg", f"TORCH_INDEX_URL={url}"]
            for name in trackers:
                args += ["--tracker", name]
            tag = f"ftc-runtime:test-{'-'.join((*trackers, flavor))}"
            r = ftc_cli(
                "image", "build", flavor, "-t", tag, "--base", BASE, "--network", "host", *args, host=self.engine.host
            )
        finally:
            server.shutdown()
        assert r.returncode == 0, r.stderr[-5000:]
        m = re.search(r"built (\S+) \((sha256:[0-9a-f]{64}), ([\d.]+) GB\)(?: with [^;]*)? in (\d+) s", r.stdout)
        assert m, r.stdout
        built = {"tag": m[1], "id": m[2], "gb": float(m[3]), "seconds": int(m[4]), "said": r.stdout}
        print(f"[images] {tag}: {built}")
        measured = ASSETS / "images-built.json"  # for images/README.md's table
        found = json.loads(measured.read_text()) if measured.exists() else {}
        measured.write_text(json.dumps({**found, tag: built}, indent=2) + "\n")
        return built


@pytest.fixture(scope="module")
def images(engine) -> Images:
    return Images(engine)


def _in_image(engine, image: str, entrypoint: str, *args: str) -> subprocess.CompletedProcess:
    """``docker run --rm --entrypoint E IMAGE ARGS`` with no network: what the image carries, and nothing else."""
    env = {**os.environ, "DOCKER_HOST": engine.host}
    command = ["docker", "run", "--rm", "--network", "none", "--entrypoint", entrypoint, image, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_the_quickstart_trains_in_the_built_image(engine, images, flavor, tmp_path):
    image = images[flavor]
    quickstart = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", quickstart, ignore=shutil.ignore_patterns("output"))
    spec = quickstart / "job.yaml"
    spec.write_text(
        spec.read_text().replace("output_dir: ../../runs/quickstart", "output_dir: run") + f"image: {image['tag']}\n"
    )
    plan = quickstart / "plan.json"
    r = ftc_cli("compile", spec, "-o", plan, host=engine.host)
    assert r.returncode == 0, r.stderr
    assert read_json(plan)["image"]["ref"] == image["id"]

    r = ftc_cli("run", plan, "--backend", "docker", host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[ftc] done: 3 epoch(s)" in r.stdout + r.stderr
    checkpoint = (quickstart / "run" / "best").resolve()
    record = read_json(checkpoint / "lineage.json")
    assert record["environment"]["image"]["id"] == image["id"]
    packages = record["environment"]["packages"]
    pins = "images/versions.txt" if flavor == "cpu" else "images/versions-gpu.txt"
    torch_pin = re.search(r"^torch==(\S+)$", (REPO / pins).read_text(), re.MULTILINE)[1]
    assert packages["torch"].split("+")[0] == torch_pin  # the image's own stack trained it, not this environment's
    assert all(p.stat().st_uid == os.getuid() for p in checkpoint.iterdir())
    assert ftc_cli("lineage", "verify", checkpoint, host=engine.host).returncode == 0


def test_the_gpu_image_carries_the_toolchain_triton_inductor_and_liger_need(engine, images):
    r = _in_image(engine, images["gpu"]["tag"], "python", "-c", TOOLCHAIN_PROBE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    probe = json.loads(r.stdout.strip().splitlines()[-1])
    gpu_pins = (REPO / "images/versions-gpu.txt").read_text()
    assert probe["uid"] == 1000 and probe["cc"] == "/usr/bin/gcc" and probe["triton_launcher"] == 42
    assert probe["python"].startswith("3.11.")
    assert probe["cuda"].startswith("13.0") and probe["cuda_available"] is False  # a CUDA build, on this CPU
    for name in ("torch", "triton", "liger_kernel", "deepspeed"):
        assert f"\n{name}=={probe[name].split('+')[0]}\n" in gpu_pins, (name, probe[name])

    report = _in_image(engine, images["gpu"]["tag"], "ds_report")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert "DeepSpeed C++/CUDA extension op report" in report.stdout
    assert "deepspeed install path" in report.stdout


def _installed(engine, tag: str) -> dict[str, str]:
    listed = _in_image(engine, tag, "python", "-m", "pip", "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    return {
        canonicalize_name(d["name"]): d["version"] for d in json.loads(listed.stdout) if d["name"] not in ("pip", "ftc")
    }


def _pins() -> tuple[dict[str, str], set[str]]:
    """images/versions.txt's pins, and those of its tracker section (what only the tracker variant installs)."""
    text = (REPO / "images/versions.txt").read_text()
    pins = {k: v for k, (_, v) in parse_pin_file(text).pins.items()}
    section = text[text.index("# --- the tracker variant") :]
    return pins, {canonicalize_name(line.split("==")[0]) for line in section.splitlines() if "==" in line}


def test_the_cpu_image_has_no_compiler_and_the_same_stack(engine, images):
    r = _in_image(engine, images["cpu"]["tag"], "sh", "-c", "command -v gcc cc g++ || echo none; id -u")
    assert r.stdout.split() == ["none", "1000"], r.stdout + r.stderr
    installed = _installed(engine, images["cpu"]["tag"])
    assert installed["torch"].endswith("+cpu")
    pins, variant_only = _pins()
    # every pin but the tracker variant's, at its version, and nothing else
    assert {k: v.split("+")[0] for k, v in installed.items()} == {
        k: v for k, v in pins.items() if k not in variant_only
    }


def test_the_tracker_variant_carries_the_pinned_tracker_clients_and_a_docker_run_logs_to_one(engine, images, tmp_path):
    trackers = ("mlflow", "wandb", "tensorboard")
    image = images.get("cpu", trackers)
    assert "with the tracker clients of mlflow, wandb, tensorboard" in image["said"]
    installed = _installed(engine, image["tag"])
    pins, variant_only = _pins()
    assert {"mlflow-skinny", "wandb", "tensorboard"} <= variant_only
    assert {k: v.split("+")[0] for k, v in installed.items()} == pins  # every pin, the trackers' too, and no other
    r = _in_image(engine, image["tag"], "python", "-c", "import mlflow, wandb, tensorboard, ftc.runtime; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    label = engine.client.images.get(image["tag"]).labels["dev.ftc.trackers"]
    assert label == "mlflow wandb tensorboard"

    # the quickstart with `logger: tensorboard` (no server needed) in that image, through `ftc run --backend docker`
    quickstart = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", quickstart, ignore=shutil.ignore_patterns("output"))
    spec = quickstart / "job.yaml"
    spec.write_text(
        spec.read_text().replace("output_dir: ../../runs/quickstart", "output_dir: run")
        + f"image: {image['tag']}\nlogger:\n  provider: tensorboard\n"
    )
    assert ftc_cli("compile", spec, "-o", quickstart / "plan.json", host=engine.host).returncode == 0
    r = ftc_cli("run", quickstart / "plan.json", "--backend", "docker", host=engine.host)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert list((quickstart / "run" / "tensorboard").glob("events.out.tfevents.*")), r.stdout + r.stderr
    assert read_json(quickstart / "run" / "summary.json")["tracker"]["provider"] == "tensorboard"
