"""The runtime images: every version lives in images/versions.txt, and the Dockerfiles follow it.

Static checks, no container engine. The rules live in ``ftc.images.lint`` (``python -m ftc.images.lint``); each
returns the problems it finds (an empty list when the files keep it). The tests run them on the repository, then on
broken copies to prove each rule catches what it is meant to catch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ftc.images.lint import (
    DOCKERFILES,
    ENTRYPOINT,
    IMAGE_EXTRAS,
    PIN_FILE,
    PIN_FILE_GPU,
    PinFile,
    canonicalize_name,
    closure_problems,
    dockerfile_problems,
    dockerfile_stages,
    dockerignore_problems,
    dockerignore_rules,
    environment_problems,
    image_problems,
    is_ignored,
    package_dirs,
    parse_dockerfile,
    parse_pin_file,
    pyproject_problems,
    read_pyproject,
    settings_problems,
)

REPO = Path(__file__).resolve().parents[2]


# --- the repository keeps every rule ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pin_file() -> PinFile:
    return parse_pin_file((REPO / PIN_FILE).read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return read_pyproject(REPO)


def test_the_pin_file_has_only_exact_pins_and_settings(pin_file):
    assert pin_file.problems == []
    assert pin_file.pins, "no pins read"


def test_every_pin_satisfies_pyproject_and_every_declared_package_is_pinned(pin_file, pyproject):
    assert pyproject_problems(pin_file, pyproject) == []
    extras = pyproject["project"]["optional-dependencies"]
    for extra in IMAGE_EXTRAS:
        names = {canonicalize_name(Requirement(r).name) for r in extras[extra]}
        assert names and names <= pin_file.pins.keys(), f"the {extra} extra is not pinned"


def test_the_pins_are_the_versions_the_tests_run_on(pin_file):
    assert environment_problems(pin_file) == []


def test_the_pin_file_pins_everything_ftc_pulls_in_and_nothing_else(pin_file, pyproject):
    assert closure_problems(pin_file, pyproject) == []


def test_base_images_are_pinned_by_digest_and_match_python_and_cuda(pin_file):
    assert settings_problems(pin_file) == []


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_dockerfile_follows_the_pin_file_and_is_hygienic(flavour, pin_file, pyproject):
    text = (REPO / DOCKERFILES[flavour]).read_text()
    assert dockerfile_problems(text, flavour, pin_file, pyproject, DOCKERFILES[flavour]) == []


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_image_runs_as_a_fixed_non_root_user_with_the_runtime_entry_point(flavour):
    final = dockerfile_stages(parse_dockerfile((REPO / DOCKERFILES[flavour]).read_text()))[1][-1]
    assert [i.args for i in final if i.keyword == "USER"][-1] == "1000:1000"
    assert json.loads([i.args for i in final if i.keyword == "ENTRYPOINT"][-1]) == ENTRYPOINT


def test_the_build_context_is_small_and_complete(pyproject):
    dockerfiles = {flavour: (REPO / path).read_text() for flavour, path in DOCKERFILES.items()}
    assert dockerignore_problems((REPO / ".dockerignore").read_text(), dockerfiles, REPO, pyproject) == []


def test_the_package_folders_come_from_the_setuptools_mapping():
    pyproject = {"tool": {"setuptools": {"package-dir": {"ftc": "src/ftc", "ftc.x": "x", "ftc.y": "lib/y/"}}}}
    assert package_dirs(pyproject) == {"ftc": "src/ftc", "ftc.x": "x", "ftc.y": "lib/y"}


def test_a_new_part_needs_no_change_to_the_images(repo_copy):
    _add_package("ftc.plugins", "plugins")(repo_copy)
    (repo_copy / "plugins" / "sub").mkdir()
    (repo_copy / "plugins" / "sub" / "__init__.py").write_text("")
    assert image_problems(repo_copy) == []


# --- and each rule catches what it is for --------------------------------------------------------------------------


def _edit(path: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        target = root / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}: update the test"
        target.write_text(text.replace(old, new, 1))

    return apply


def _exclude(pattern: str) -> Callable[[Path], None]:
    """One more pattern at the end of .dockerignore (the last pattern that matches decides)."""

    def apply(root: Path) -> None:
        with (root / ".dockerignore").open("a") as out:
            out.write(f"{pattern}\n")

    return apply


def _toml(value) -> str:
    """A TOML value on one line: for strings, numbers, booleans and arrays, JSON's syntax is TOML's."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _edit_pyproject(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """pyproject.toml rewritten with only what these checks read: [project] and [tool.setuptools]."""

    def apply(root: Path) -> None:
        pyproject = read_pyproject(root)
        change(pyproject)
        tables = {"project": pyproject["project"], "tool.setuptools": pyproject["tool"]["setuptools"]}
        (root / "pyproject.toml").write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in table.items()) + "\n"
                for name, table in tables.items()
            )
        )

    return apply


def _set_extra(extra: str, requirements: list[str]) -> Callable[[dict], None]:
    def change(pyproject: dict) -> None:
        pyproject["project"]["optional-dependencies"][extra] = requirements

    return change


def _add_package(name: str, folder: str, create: bool = True) -> Callable[[Path], None]:
    """A package mapped to a new top-level folder in pyproject.toml (and the folder, with an __init__.py)."""
    edit = _edit_pyproject(lambda p: _map_package(p, name, folder))

    def apply(root: Path) -> None:
        edit(root)
        if create:
            (root / folder).mkdir()
            (root / folder / "__init__.py").write_text("")

    return apply


def _map_package(pyproject: dict, name: str, folder: str) -> None:
    setuptools = pyproject["tool"]["setuptools"]
    setuptools["package-dir"][name] = folder


TORCH_PIN = "torch==" + parse_pin_file((REPO / PIN_FILE).read_text()).pins.get("torch", ("torch", "2.13.0"))[1]
CPU, GPU = DOCKERFILES["cpu"], DOCKERFILES["gpu"]

BROKEN = {
    # the pin file
    "a range, not a pin": (_edit(PIN_FILE, "\npeft==", "\npeft>="), "is not an exact pin"),
    "a declared package not pinned": (_edit(PIN_FILE, "\npeft==", "\n# peft=="), "peft: declared in pyproject.toml"),
    "a pin outside pyproject's range": (
        _edit(PIN_FILE, "\ntransformers==", "\ntransformers==4.57.6\n# "),
        "does not satisfy pyproject.toml",
    ),
    "a pin that is not what the tests ran": (
        _edit(PIN_FILE, "\naccelerate==", "\naccelerate==1.0.0\n# "),
        "the test environment has accelerate",
    ),
    "a local version label": (_edit(PIN_FILE, f"\n{TORCH_PIN}\n", f"\n{TORCH_PIN}+cpu\n"), "local version label"),
    "a package pinned twice": (_edit(PIN_FILE, "\npeft==", "\npeft==0.21.2\npeft=="), "pinned twice"),
    "a transitive package not pinned": (_edit(PIN_FILE, "\nnumpy==", "\n# numpy=="), "add `numpy=="),
    "a pin nothing needs": (
        _edit(PIN_FILE, "\nnumpy==", "\ndvc==3.50.0\nnumpy=="),
        "dvc is pinned but nothing ftc declares needs it",
    ),
    "an s3 package not pinned": (_edit(PIN_FILE, "\nboto3==", "\n# boto3=="), "boto3: declared in pyproject.toml"),
    "a gcs package not pinned": (
        _edit(PIN_FILE, "\ngoogle-cloud-storage==", "\n# google-cloud-storage=="),
        "google-cloud-storage: declared in pyproject.toml",
    ),
    "a gcs pin outside pyproject's range": (
        _edit(PIN_FILE, "\ngoogle-cloud-storage==", "\ngoogle-cloud-storage==2.9.0\n# "),
        "does not satisfy pyproject.toml's `google-cloud-storage",
    ),
    "what the s3 extra pulls in not pinned": (_edit(PIN_FILE, "\nbotocore==", "\n# botocore=="), "add `botocore=="),
    "what the gcs extra pulls in not pinned": (_edit(PIN_FILE, "\nprotobuf==", "\n# protobuf=="), "add `protobuf=="),
    "a base image by tag only": (
        _edit(PIN_FILE, "#@ BASE_IMAGE=python:3.11.7-slim-bookworm@sha256:", "#@ BASE_IMAGE=python:3.11.7-slim#"),
        "not pinned by digest",
    ),
    "torch's CPU index is a CUDA one": (_edit(PIN_FILE, "whl/cpu", "whl/cu130"), "is not a CPU index"),
    "the base image's Python is not the tests'": (
        _edit(PIN_FILE, "#@ BASE_IMAGE=python:3.11.7-slim", "#@ BASE_IMAGE=python:3.9.18-slim"),
        "the tests run on",
    ),
    # the GPU pin file
    "a GPU pin that differs from the CPU image's": (
        _edit(PIN_FILE_GPU, "\npeft==", "\npeft==0.17.0\n# "),
        "the images share every version but torch's",
    ),
    "a CPU pin missing from the GPU pins": (
        _edit(PIN_FILE_GPU, "\nnumpy==", "\n# numpy=="),
        f"is pinned in {PIN_FILE} but not in {PIN_FILE_GPU}",
    ),
    "liger-kernel not pinned for the GPU image": (
        _edit(PIN_FILE_GPU, "\nliger_kernel==", "\n# liger_kernel=="),
        f"liger-kernel: declared in pyproject.toml (liger-kernel>=0.8) but not pinned in {PIN_FILE_GPU}",
    ),
    "a range in the GPU pins": (_edit(PIN_FILE_GPU, "\ntriton==", "\ntriton>="), "is not an exact pin"),
    "a setting in the GPU pins": (
        _edit(PIN_FILE_GPU, "\ntriton==", "\n#@ BASE_IMAGE=debian:12\ntriton=="),
        "settings belong in",
    ),
    "a new requirement in the train extra": (
        _edit_pyproject(lambda p: p["project"]["optional-dependencies"]["train"].append("rich-click>=1")),
        "rich-click: declared in pyproject.toml",
    ),
    "a new requirement in the gcs extra": (
        _edit_pyproject(_set_extra("gcs", ["google-cloud-storage>=2.10", "gcsfs>=2023.1"])),
        "gcsfs: declared in pyproject.toml",
    ),
    "an extra of a dependency": (
        _edit_pyproject(_set_extra("s3", ["boto3[crt]>=1.28"])),
        "awscrt (needed by botocore) is not installed",
    ),
    # the Dockerfiles
    "a version in a RUN": (
        _edit(
            CPU,
            "pip install --no-deps --no-build-isolation .",
            "pip install --no-deps --no-build-isolation . numpy==2.4.6",
        ),
        "`==<version>` in a Dockerfile",
    ),
    "a version in an ENV": (
        _edit(CPU, "    HOME=/home/ftc", f"    HOME=/home/ftc TORCH_VERSION={TORCH_PIN.split('==')[1]}"),
        "pinned version",
    ),
    "a version after a package name": (
        _edit(CPU, "-c images/versions.txt torch\n", "-c images/versions.txt 'torch>=2.13'\n"),
        "a version of torch is written",
    ),
    "a base image ARG that differs from the pin file": (
        _edit(GPU, "ARG BASE_IMAGE=python:3.11.7-slim", "ARG BASE_IMAGE=python:3.11.6-slim"),
        "they must be equal",
    ),
    "a base image named in FROM": (
        _edit(CPU, "FROM ${BASE_IMAGE} AS builder", "FROM python:3.11-slim AS builder"),
        "names an image directly",
    ),
    "torch's index written in the Dockerfile": (
        _edit(CPU, '--index-url "$index"', "--index-url https://download.pytorch.org/whl/cpu"),
        "torch's index URL is written",
    ),
    "ftc's version label out of date": (
        _edit(CPU, "ARG FTC_VERSION=", "ARG FTC_VERSION=9"),
        "pyproject.toml's version",
    ),
    "root": (_edit(CPU, "USER 1000:1000", "USER root"), "use a numeric uid"),
    "uid 0": (_edit(GPU, "USER 1000:1000", "USER 0:0"), "is root"),
    "no USER": (_edit(GPU, "USER 1000:1000", ""), "sets no USER"),
    "another entry point": (
        _edit(CPU, 'ENTRYPOINT ["python", "-m", "ftc.runtime"]', 'ENTRYPOINT ["ftc", "run"]'),
        "ENTRYPOINT is",
    ),
    "a token as a build argument": (
        _edit(GPU, "ARG FTC_REVISION=", "ARG HF_TOKEN=\nARG FTC_REVISION="),
        "ARG HF_TOKEN looks like a credential",
    ),
    "a key in ENV": (
        _edit(CPU, "    HOME=/home/ftc", "    HOME=/home/ftc AWS_SECRET_ACCESS_KEY=x"),
        "ENV AWS_SECRET_ACCESS_KEY looks like a credential",
    ),
    "a password in a builder stage": (
        _edit(CPU, "ENV PIP_NO_CACHE_DIR=1", "ENV PIP_PASSWORD=x PIP_NO_CACHE_DIR=1"),
        "ENV PIP_PASSWORD looks like a credential",
    ),
    "hub downloads allowed": (_edit(GPU, "    HF_HUB_OFFLINE=1 \\\n", ""), "ENV HF_HUB_OFFLINE=1"),
    "a pip cache": (
        _edit(
            CPU,
            "    PIP_NO_CACHE_DIR=1 \\\n    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    HF_HUB_OFFLINE",
            "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    HF_HUB_OFFLINE",
        ),
        "ENV PIP_NO_CACHE_DIR=1",
    ),
    "a compiler in the final stage": (
        _edit(CPU, "RUN groupadd", "RUN apt-get update && apt-get install -y build-essential\nRUN groupadd"),
        "installs a compiler",
    ),
    "sources in the final stage": (
        _edit(
            CPU,
            "COPY --from=builder /opt/ftc /opt/ftc",
            "COPY --from=builder /opt/ftc /opt/ftc\nCOPY src/ftc /src/ftc",
        ),
        "copies from the build context",
    ),
    "one stage": (_edit(CPU, "\nFROM ${BASE_IMAGE}\n", "\n"), "not a multi-stage build"),
    "no compiler in the GPU image": (
        _edit(GPU, "install -y --no-install-recommends gcc g++ libc6-dev", "install -y --no-install-recommends gcc"),
        "the final stage does not install g++",
    ),
    "the GPU image installs without its pin file": (
        _edit(GPU, "pip install -c images/versions-gpu.txt -r", "pip install -c images/versions.txt -r"),
        "(-c images/versions-gpu.txt)",
    ),
    "no check that everything installed is pinned": (
        _edit(CPU, "    && python -m ftc.images.lint --installed images/versions.txt \\\n", ""),
        "no RUN checks that everything installed is pinned",
    ),
    "the environment not copied": (
        _edit(GPU, "COPY --from=builder /opt/ftc /opt/ftc", ""),
        "does not COPY --from=<builder> /opt/ftc",
    ),
    "no OCI source label": (
        _edit(GPU, 'org.opencontainers.image.source="${FTC_SOURCE_URL}"', 'org.example.source="${FTC_SOURCE_URL}"'),
        "no LABEL org.opencontainers.image.source",
    ),
    "the pin file not used": (
        _edit(CPU, "pip install -c images/versions.txt -r", "pip install -r"),
        "without the pin file as constraints",
    ),
    "the s3 extra not installed": (
        _edit(GPU, '"train", "s3", "gcs"', '"train", "gcs"'),
        "does not install the `s3` extra",
    ),
    "the gcs extra not installed": (
        _edit(CPU, '"train", "s3", "gcs"', '"train", "s3"'),
        "does not install the `gcs` extra",
    ),
    "the extras not read from pyproject.toml": (
        _edit(CPU, 'p["optional-dependencies"][x]', "[x]"),
        "no RUN reads [project] dependencies",
    ),
    "the pin file not copied": (
        _edit(GPU, "COPY images/versions.txt images/versions-gpu.txt images/", "COPY images/versions.txt images/"),
        "does not COPY images/versions-gpu.txt",
    ),
    "versions.txt not copied where TRACKERS is checked": (
        _edit(GPU, "COPY images/versions.txt images/versions-gpu.txt images/", "COPY images/versions-gpu.txt images/"),
        f"{GPU}: does not COPY images/versions.txt (its TRACKER_EXTRAS says what TRACKERS may name)",
    ),
    # the tracker variant
    "a tracker's client not pinned": (
        _edit(PIN_FILE, "\nwandb==", "\n# wandb=="),
        "wandb: declared in pyproject.toml (wandb>=0.18) but not pinned in images/versions.txt",
    ),
    "what a tracker pulls in not pinned": (_edit(PIN_FILE, "\ngrpcio==", "\n# grpcio=="), "add `grpcio=="),
    "a tracker's client not pinned for the GPU image": (
        _edit(PIN_FILE_GPU, "\nmlflow-skinny==", "\n# mlflow-skinny=="),
        "mlflow-skinny==3.17.2 is pinned in images/versions.txt but not in images/versions-gpu.txt",
    ),
    "no tracker extras named": (
        _edit(PIN_FILE, "#@ TRACKER_EXTRAS=mlflow wandb tensorboard\n", ""),
        "images/versions.txt: no `#@ TRACKER_EXTRAS=...` line",
    ),
    "a logger provider without a tracker extra": (
        _edit(PIN_FILE, "#@ TRACKER_EXTRAS=mlflow wandb tensorboard", "#@ TRACKER_EXTRAS=mlflow wandb"),
        "TRACKER_EXTRAS is 'mlflow wandb', the spec's logger providers are 'mlflow wandb tensorboard'",
    ),
    "a tracker extra pyproject.toml does not have": (
        _edit(PIN_FILE, "#@ TRACKER_EXTRAS=mlflow wandb", "#@ TRACKER_EXTRAS=comet mlflow wandb"),
        "TRACKER_EXTRAS names comet, which is not an extra of pyproject.toml",
    ),
    "no TRACKERS argument": (
        _edit(CPU, "ARG TRACKERS=\nRUN", "RUN"),
        f"{CPU}: no `ARG TRACKERS=` before the RUN that lists what to install",
    ),
    "a tracker in the default image": (
        _edit(GPU, "ARG TRACKERS=\nRUN", "ARG TRACKERS=mlflow\nRUN"),
        "ARG TRACKERS defaults to 'mlflow': the default image carries no tracker",
    ),
    "TRACKERS not read by the install step": (
        _edit(CPU, 'k == "#@ TRACKER_EXTRAS"', 'k == "#@ EXTRAS"'),
        f"{CPU}: the RUN that lists what to install does not add the TRACKERS extras",
    ),
    "the checkout not copied": (
        _edit(GPU, "COPY . .\n", ""),
        f"{GPU}: does not COPY the build context",
    ),
    # the build context
    "everything sent": (_edit(".dockerignore", "\n**/.*\n", "\n"), ".venv/bin/python would be sent"),
    "a copied file left out": (_exclude("images/*.txt"), "images/versions-gpu.txt, which images/Dockerfile.gpu copies"),
    "a part's modules left out": (_exclude("lineage/"), ".dockerignore: lineage/__init__.py is excluded"),
    "a subpackage's modules left out": (
        _exclude("stores/sources/"),
        ".dockerignore: stores/sources/__init__.py is excluded, but the images need it",
    ),
    "package data left out": (
        _exclude("**/*.json"),
        ".dockerignore: spec/job.schema.json is excluded, but the images need it",
    ),
    "bytecode sent": (
        _edit(".dockerignore", "**/__pycache__\n**/*.py[cod]\n", ""),
        "src/ftc/__pycache__/__init__.cpython-311.pyc would be sent",
    ),
    "a part that does not exist": (
        _add_package("ftc.plugins", "plugins", create=False),
        "pyproject.toml: package ftc.plugins is in plugins/, which does not exist",
    ),
}


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    for path in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO / path, tmp_path / path)
    folders = [folder.split("/")[0] for folder in package_dirs(read_pyproject(REPO)).values()]
    for folder in dict.fromkeys(["images", *folders]):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_unchanged_copy_keeps_every_rule(repo_copy):
    assert image_problems(repo_copy) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_rule_catches_its_breakage(case, repo_copy):
    breakage, expected = BROKEN[case]
    breakage(repo_copy)
    problems = image_problems(repo_copy)
    assert any(expected in p for p in problems), f"{case}: no problem mentions {expected!r}; found {problems}"


def test_the_command_line_prints_the_problems_and_exits_1(repo_copy):
    lint = [sys.executable, "-m", "ftc.images.lint"]
    ok = subprocess.run(lint, cwd=repo_copy, capture_output=True, text=True, timeout=120)  # ROOT: . by default
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: "), ok.stdout
    BROKEN["root"][0](repo_copy)
    BROKEN["a range, not a pin"][0](repo_copy)
    broken = subprocess.run([*lint, str(repo_copy)], capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert any(BROKEN["root"][1] in line for line in lines), broken.stdout
    assert any(BROKEN["a range, not a pin"][1] in line for line in lines), broken.stdout
    assert not any(line.startswith("ok") for line in lines), broken.stdout


@pytest.mark.parametrize(
    "path, ignored",
    [
        (".venv/lib/python3.11/site-packages/x.py", True),
        ("src/ftc/cli.py", False),
        ("src/ftc/__pycache__/cli.cpython-311.pyc", True),
        ("spec/sub/__pycache__/a.pyc", True),
        ("images/versions.txt", False),
        ("examples/quickstart/job.yaml", True),
        ("ftc.egg-info/SOURCES.txt", True),
    ],
)
def test_the_dockerignore_reading_follows_the_last_matching_pattern(path, ignored):
    rules = dockerignore_rules("*\n!src/\n!spec\n!images/\n**/__pycache__\n*.egg-info\n")
    assert is_ignored(rules, path) is ignored


def test_a_version_of_another_build_counts_as_the_same_version():
    pins = parse_pin_file("torch==2.13.0\n")
    assert environment_problems(pins, version_of=lambda name: "2.13.0+cu130") == []
    assert environment_problems(pins, version_of=lambda name: "2.14.1+cpu") != []


def test_the_installed_check_names_every_unpinned_package_and_other_version(tmp_path):
    import importlib.metadata

    from ftc.images.lint import installed_problems

    site = tmp_path / "site"
    for name, version in (("numpy", "2.4.6"), ("PyYAML", "6.0.3"), ("six", "1.17.0"), ("pip", "26.0"), ("ftc", "0.1")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    pins = parse_pin_file("numpy==2.4.6\nPyYAML==6.0.4\n", "pins.txt")
    problems = installed_problems(pins, "pins.txt", lambda: importlib.metadata.distributions(path=[str(site)]))
    assert sorted(problems) == [
        "PyYAML 6.0.3 is installed but pins.txt pins 6.0.4",
        "six 1.17.0 is installed but not pinned in pins.txt",
    ]  # pip and ftc itself are not pins


def test_a_build_argument_carrying_a_password_is_refused_before_the_engine_is_asked(tmp_path):
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "image", "build", "gpu", "--build-arg",
         "PIP_INDEX_URL=https://me:s3cret@pypi.example/simple/"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--build-arg PIP_INDEX_URL: the URL carries a user and password" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr


# --- the tracker variant: what its build step installs ----------------------------------------------------------------


def _requirements_step(flavour: str) -> str:
    """The Python program of the Dockerfile's RUN that lists what to install (its `python -c '...'`), as written."""
    import shlex

    runs = [i.args for i in parse_dockerfile((REPO / DOCKERFILES[flavour]).read_text()) if i.keyword == "RUN"]
    (step,) = [args for args in runs if "optional-dependencies" in args]
    words = shlex.split(step.split(">", 1)[0])
    assert words[:2] == ["python", "-c"], step
    return words[2]


def _listed(flavour: str, trackers: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run that step as the build runs it: in a folder holding pyproject.toml and the pin files, TRACKERS set."""
    (tmp_path / "images").mkdir(exist_ok=True)
    shutil.copy2(REPO / "pyproject.toml", tmp_path)
    for path in (PIN_FILE, PIN_FILE_GPU):
        shutil.copy2(REPO / path, tmp_path / path)
    env = {**os.environ, "TRACKERS": trackers}
    return subprocess.run(
        [sys.executable, "-c", _requirements_step(flavour)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def _requirements(listed: str) -> list[str]:
    return [str(Requirement(line)) for line in listed.splitlines()]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_tracker_variant_installs_exactly_the_tracker_extras_it_names(flavour, pin_file, pyproject, tmp_path):
    from ftc.images.lint import declared_requirements, tracker_extras

    extras = (*IMAGE_EXTRAS, "gpu") if flavour == "gpu" else IMAGE_EXTRAS
    plain = _listed(flavour, "", tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert _requirements(plain.stdout) == [str(r) for r in declared_requirements(pyproject, extras)]
    assert not {"mlflow-skinny", "wandb", "tensorboard"} & {Requirement(r).name for r in plain.stdout.split()}

    trackers = tracker_extras(pin_file)
    assert trackers == ("mlflow", "wandb", "tensorboard")
    for given, chosen in (
        ("mlflow", ("mlflow",)),
        ("wandb,tensorboard", ("wandb", "tensorboard")),
        (" ".join(trackers), trackers),
    ):
        listed = _listed(flavour, given, tmp_path)
        assert listed.returncode == 0, listed.stderr
        expected = declared_requirements(pyproject, (*extras, *chosen))
        assert _requirements(listed.stdout) == [str(r) for r in expected]


def test_an_unknown_tracker_stops_the_build_step_naming_the_known_ones(tmp_path):
    listed = _listed("cpu", "mlflow ray", tmp_path)
    assert listed.returncode == 1
    assert listed.stderr.strip() == "TRACKERS: ray: not a tracker extra; choose from mlflow wandb tensorboard"
    assert listed.stdout == ""


def test_the_pins_only_the_tracker_variant_needs_are_its_clients_and_what_they_pull_in(pin_file, pyproject):
    """Without TRACKER_EXTRAS, exactly the tracker section's pins are the ones nothing else needs: the variant
    installs those (at these versions) and the plain image none of them."""
    text = (REPO / PIN_FILE).read_text()
    section = text[text.index("# --- the tracker variant") :]
    variant_only = {canonicalize_name(line.split("==")[0]) for line in section.splitlines() if "==" in line}
    assert {"mlflow-skinny", "wandb", "tensorboard", "grpcio"} <= variant_only
    plain = PinFile(pins=pin_file.pins, settings={k: v for k, v in pin_file.settings.items() if k != "TRACKER_EXTRAS"})
    unneeded = {canonicalize_name(p.split(" is pinned but nothing")[0]) for p in closure_problems(plain, pyproject)}
    assert unneeded == variant_only
    assert closure_problems(pin_file, pyproject) == []


def test_the_default_tag_names_the_trackers_before_the_flavour():
    from ftc.images.build import default_tag

    assert default_tag("cpu").endswith("-cpu")
    assert default_tag("cpu", ("mlflow", "wandb")).split(":")[1].endswith("-mlflow-wandb-cpu")  # -cpu: a CPU image


def test_an_unknown_tracker_is_refused_before_the_engine_is_asked():
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "image", "build", "cpu", "--tracker", "mlflow", "--tracker", "comet"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "--tracker comet: not a tracker extra of this checkout (images/versions.txt's TRACKER_EXTRAS: mlflow, wandb,"
        " tensorboard)" in done.stderr
    )


def test_a_tracker_asked_of_a_checkout_without_its_pin_file_is_refused_naming_it(tmp_path):
    # a checkout with images/ and pyproject.toml but no images/versions.txt: the plain image needs no tracker list
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile.cpu").write_text("FROM scratch\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "image", "build", "cpu", "--context", str(tmp_path), "--tracker", "mlflow"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--tracker: {tmp_path / 'images' / 'versions.txt'} cannot be read (" in done.stderr
    assert "Traceback" not in done.stderr
