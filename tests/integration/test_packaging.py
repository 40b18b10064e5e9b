"""A built wheel in a fresh venv and an editable install both give a working `ftc`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from support.parts import parts

pytestmark = pytest.mark.slow


def _fresh_venv(path):
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin"


def _run(*args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_in_a_fresh_venv(tmp_path):
    # build from a copy: an in-tree build would leave build/ in the checkout
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache"
        ),
    )
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("ftc-*.whl")
    # every module of every part, subpackages included (setuptools finds them: pyproject lists only the parts), and
    # the package data
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        "/".join([*package.split("."), *path.relative_to(source / folder).parts])
        for folder, package in parts().items()
        for path in (source / folder).rglob("*.py")
    }
    assert modules - shipped == set()
    assert {"ftc/py.typed", "ftc/spec/job.schema.json", "ftc/spec/plan.schema.json"} <= shipped
    bin_dir = _fresh_venv(tmp_path / "venv")
    _run(bin_dir / "pip", "install", "-q", wheel)
    assert "compile" in _run(bin_dir / "ftc", "--help").stdout
    # the schemas travel inside the wheel: compiling an example works from the installed package alone
    spec = REPO / "examples" / "quickstart" / "job.yaml"
    _run(
        bin_dir / "ftc",
        "compile",
        spec,
        "-o",
        tmp_path / "plan.json",
        cwd=tmp_path,
        env={"FTC_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(bin_dir)},
    )
    installed = _run(bin_dir / "python", "-c", "import ftc.spec, sys; print(ftc.spec.__file__)", cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in installed
    assert (Path(installed.strip()).parents[1] / "py.typed").is_file()  # type checkers read the installed annotations
    # from the checkout's root (on sys.path first, as with `python -m pytest`) the installed package is the one
    # imported, whole: no folder of the checkout shadows it
    packages = ", ".join(["ftc.cli", "ftc.errors", *parts().values()])  # every part pyproject.toml maps
    located = _run(
        bin_dir / "python", "-c", f"import {packages}; print(ftc.cli.__file__, ftc.spec.__file__)", cwd=source
    )
    assert located.stdout.count(str(tmp_path / "venv")) == 2, located.stdout
    # and tests run from the root against that install
    _run(bin_dir / "pip", "install", "-q", "pytest")
    tests = _run(
        bin_dir / "python", "-m", "pytest", "tests/unit/spec/test_schema.py", "-q", "-p", "no:cacheprovider", cwd=source
    )
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_editable_install_in_a_fresh_venv(tmp_path):
    bin_dir = _fresh_venv(tmp_path / "venv")
    _run(bin_dir / "pip", "install", "-q", "-e", REPO)
    assert "compile" in _run(bin_dir / "ftc", "--help").stdout
    located = _run(
        bin_dir / "python",
        "-c",
        "import ftc.compiler, ftc.spec; print(ftc.compiler.__file__, ftc.spec.__file__)",
        cwd=tmp_path,
    ).stdout
    assert str(REPO / "compiler") in located and str(REPO / "spec") in located
