"""ftc's parts as pyproject.toml lists them: its ``[tool.setuptools] package-dir`` is the one place they are written,
and the tests that walk the product's folders read them from there."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def parts() -> dict[str, str]:
    """Folder (relative to the repository root) -> the import package it is, in pyproject.toml's order:
    ``{"src/ftc": "ftc", "spec": "ftc.spec", ...}``."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = pyproject["tool"]["setuptools"]["package-dir"]
    return {folder.rstrip("/"): name for name, folder in mapping.items() if name}
