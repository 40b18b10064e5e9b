"""Static checks of the runtime images: every version lives in images/versions.txt, the Dockerfiles follow it, and
.dockerignore sends what the build needs and nothing else. No container engine, nothing built.

    python -m ftc.images.lint [ROOT]        (ROOT: the repository root; the current folder by default)
    python -m ftc.images.lint --installed PIN_FILE

prints one problem a line and exits 1, or prints an "ok" line and exits 0. ``--installed`` checks this environment
instead: every package installed here is pinned in PIN_FILE at its version (the images' builds run it). Each rule is
a function that returns the problems it finds (an empty list when the files keep it); :func:`image_problems` runs
them all on a folder laid out like the repository. The pins are compared with the packages installed where this
runs, and the base image's Python with the Python it runs on: run it in the test environment.

The images copy the whole build context; the folders it must send are read from pyproject.toml's
``[tool.setuptools] package-dir`` (the one list of ftc's parts), never listed here. Only the standard library is
imported at module level (and tomli on Python 3.10); the version and requirement parsing of ``packaging`` is imported
by the functions that need it.

This module is the entry point and re-exports the rules, which live by what they check in private modules:
``_lint_pins`` (the pin file against pyproject.toml and the installed packages), ``_lint_instructions`` (reading a
Dockerfile), ``_lint_dockerfiles`` (the Dockerfiles' rules) and ``_lint_context`` (pyproject.toml's package folders
and .dockerignore).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._lint_context import (
    dockerignore_problems,
    dockerignore_rules,
    is_ignored,
    package_dirs,
    read_pyproject,
)
from ._lint_dockerfiles import ENTRYPOINT, dockerfile_problems
from ._lint_instructions import DOCKERFILES, Instruction, dockerfile_stages, parse_dockerfile
from ._lint_pins import (
    IMAGE_EXTRAS,
    PIN_FILE,
    PIN_FILE_GPU,
    TRACKER_SETTING,
    PinFile,
    canonicalize_name,
    closure_problems,
    declared_requirements,
    environment_problems,
    gpu_pin_problems,
    installed_problems,
    parse_pin_file,
    pyproject_problems,
    settings_problems,
    tracker_extras,
    tracker_problems,
)

__all__ = [
    "DOCKERFILES",
    "ENTRYPOINT",
    "IMAGE_EXTRAS",
    "PIN_FILE",
    "PIN_FILE_GPU",
    "TRACKER_SETTING",
    "Instruction",
    "PinFile",
    "canonicalize_name",
    "closure_problems",
    "declared_requirements",
    "dockerfile_problems",
    "dockerfile_stages",
    "dockerignore_problems",
    "dockerignore_rules",
    "environment_problems",
    "gpu_pin_problems",
    "image_problems",
    "installed_problems",
    "is_ignored",
    "logger_providers",
    "main",
    "package_dirs",
    "parse_dockerfile",
    "parse_pin_file",
    "pyproject_problems",
    "read_pyproject",
    "settings_problems",
    "tracker_extras",
    "tracker_problems",
]


# --- everything at once, for a folder laid out like the repository ---------------------------------------------------


def image_problems(root: Path) -> list[str]:
    """Every problem of the pin file, pyproject.toml's declared packages, the packages installed here, the
    Dockerfiles and .dockerignore of the repository at ``root``; an empty list when it keeps every rule."""
    root = Path(root)
    pin_file = parse_pin_file((root / PIN_FILE).read_text())
    gpu = parse_pin_file((root / PIN_FILE_GPU).read_text(), PIN_FILE_GPU)
    pyproject = read_pyproject(root)
    dockerfiles = {flavour: (root / path).read_text() for flavour, path in DOCKERFILES.items()}
    problems = list(pin_file.problems) + gpu.problems
    trackers = tuple(x for x in tracker_extras(pin_file) if x in pyproject["project"].get("optional-dependencies", {}))
    problems += pyproject_problems(pin_file, pyproject, (*IMAGE_EXTRAS, *trackers))
    problems += tracker_problems(pin_file, pyproject, logger_providers(root, pyproject))
    problems += environment_problems(pin_file)
    problems += closure_problems(pin_file, pyproject)
    problems += settings_problems(pin_file)
    problems += gpu_pin_problems(gpu, pin_file, pyproject)
    flavour_pins = {"cpu": pin_file, "gpu": PinFile(pins=gpu.pins, settings=pin_file.settings)}
    for flavour, text in dockerfiles.items():
        problems += dockerfile_problems(text, flavour, flavour_pins[flavour], pyproject, DOCKERFILES[flavour])
    problems += dockerignore_problems((root / ".dockerignore").read_text(), dockerfiles, root, pyproject)
    return problems


def logger_providers(root: Path, pyproject: dict) -> tuple[str, ...]:
    """The trackers a spec's ``logger.provider`` may name, as the spec's JSON schema (spec/job.schema.json in the
    folder ``ftc.spec`` maps to) lists them."""
    schema = json.loads((root / package_dirs(pyproject)["ftc.spec"] / "job.schema.json").read_text())
    return tuple(schema["$defs"]["logger"]["properties"]["provider"]["enum"])


def main(argv: list[str] | None = None) -> int:
    """``python -m ftc.images.lint [ROOT]``: print each problem on its own line and return 1, or an "ok" line and
    0; 2 when ROOT is not a checkout (no pyproject.toml and images/versions.txt there)."""
    parser = argparse.ArgumentParser(
        prog="python -m ftc.images.lint",
        description="Check the runtime images' pin file, Dockerfiles and .dockerignore (nothing is built).",
    )
    parser.add_argument("root", nargs="?", default=".", type=Path, help="the repository root (default: .)")
    parser.add_argument(
        "--installed", metavar="PIN_FILE", type=Path, help="check this environment's packages against PIN_FILE instead"
    )
    args = parser.parse_args(argv)
    if args.installed is not None:
        return _check_installed(args.installed)
    root = args.root
    needed = ("pyproject.toml", PIN_FILE, PIN_FILE_GPU, *DOCKERFILES.values(), ".dockerignore")
    missing = [p for p in needed if not (root / p).is_file()]
    if missing:
        print(f"{root}: not a checkout of ftc (no {', '.join(missing)})", file=sys.stderr)
        return 2
    try:
        problems = image_problems(root)
    except ModuleNotFoundError as exc:
        print(f"ftc.images.lint needs {exc.name!r} (pip install packaging): {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ok: {root}: the images' pins, Dockerfiles and .dockerignore keep every rule")
    return 0


def _check_installed(path: Path) -> int:
    if not path.is_file():
        print(f"{path}: no such pin file", file=sys.stderr)
        return 2
    pins = parse_pin_file(path.read_text(), str(path))
    problems = pins.problems + installed_problems(pins, str(path))
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ok: every package installed in {sys.prefix} is pinned in {path} at its version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
