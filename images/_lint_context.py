"""The build context: the packages pyproject.toml installs and the folders they live in (its
``[tool.setuptools] package-dir``, the one list of ftc's parts, never listed here), and .dockerignore, which must send
every module and package data file of those folders and what the Dockerfiles copy by name, and keep everything that
is not ftc's source out (the images copy the whole context: `COPY . .`)."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ._lint_instructions import DOCKERFILES, context_sources, parse_dockerfile
from ._lint_pins import PIN_FILE

# the bytecode file that stands for all of a package folder's bytecode in the build-context check
BYTECODE = "__pycache__/__init__.cpython-311.pyc"

# paths that must never reach the build context (besides each package folder's bytecode, see package_dirs)
MUST_BE_EXCLUDED = [
    ".venv/bin/python",
    ".git/HEAD",
    "runs/quickstart/plan.json",
    "examples/quickstart/model/model.safetensors",
    "examples/smollm2-arithmetic/weights/model.gguf",
    "tests/data/schemas/x.json",
    ".ftc-test-assets/llm.whl",
    "ftc.egg-info/PKG-INFO",
    "src/ftc.egg-info/PKG-INFO",
    ".pytest_cache/v/cache",
    ".ruff_cache/x",
    ".dvc/config",
    "bench/results/x.json",
    "build/lib/ftc/cli.py",
    "dist/ftc-0.1.0.tar.gz",
    "job.plan.json",
    ".env",
    "data/model.safetensors",
]
# files `pip install .` needs besides the packages' own (see package_dirs)
MUST_BE_SENT = ["pyproject.toml", "README.md", PIN_FILE]


def read_pyproject(root: Path) -> dict:
    """``root/pyproject.toml``, parsed."""
    return tomllib.loads((root / "pyproject.toml").read_text())


# --- the packages pyproject.toml installs, and their folders ---------------------------------------------------------


def package_dirs(pyproject: dict) -> dict[str, str]:
    """Each part (an import package) -> its folder (posix, relative to the root), from ``[tool.setuptools]
    package-dir``; setuptools finds the subpackages inside each folder."""
    mapping: dict[str, str] = pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {name: posixpath.normpath(folder) for name, folder in mapping.items() if name}


def _package_files(pyproject: dict, root: Path) -> list[str]:
    """What `pip install .` takes from the parts' folders: every module, and the package data."""
    dirs = package_dirs(pyproject)
    found = set()
    for folder in dirs.values():
        found |= {f for f in (root / folder).rglob("*.py") if "__pycache__" not in f.parts}
    for name, patterns in pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {}).items():
        parents = [part for part in dirs if name == part or name.startswith(part + ".")]
        if parents:  # a package inside a part's folder, where its dotted name says
            part = max(parents, key=len)
            folder = root / dirs[part] / name[len(part) :].lstrip(".").replace(".", "/")
            found |= {f for pattern in patterns for f in folder.glob(pattern) if f.is_file()}
    return sorted(f.relative_to(root).as_posix() for f in found)


# --- .dockerignore ---------------------------------------------------------------------------------------------------


def _glob_to_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(re-include?, pattern) in file order; as the engine reads them, the last pattern that matches a path or
    one of its parent folders decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if include else line).lstrip("/")
        rules.append((include, _glob_to_regex(pattern)))
    return rules


def is_ignored(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    """Whether .dockerignore's ``rules`` keep ``path`` (posix, relative to the context) out of the build context."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for include, pattern in rules:
        if any(pattern.match(c) for c in candidates):
            ignored = not include
    return ignored


def dockerignore_problems(
    text: str, dockerfiles: dict[str, str], root: Path, pyproject: dict | None = None
) -> list[str]:
    """.dockerignore (``text``) keeps what must never reach the build out of the context, sends pyproject.toml,
    README.md, the pin file and every module and package data file of the folders pyproject.toml's package-dir maps
    (``pyproject``: read from ``root`` when not given), and every file the Dockerfiles (flavour -> text) copy by
    name."""
    if pyproject is None:
        pyproject = read_pyproject(root)
    rules = dockerignore_rules(text)
    problems = []
    dirs = package_dirs(pyproject)
    if not dirs:
        problems.append("pyproject.toml: no [tool.setuptools] package-dir: the folders the images need are unknown")
    for name, folder in dirs.items():
        if not (root / folder).is_dir():
            problems.append(f"pyproject.toml: package {name} is in {folder}/, which does not exist")
    excluded = MUST_BE_EXCLUDED + [f"{folder}/{BYTECODE}" for folder in dirs.values()]
    readme = pyproject.get("project", {}).get("readme")
    sent = MUST_BE_SENT + ([readme] if isinstance(readme, str) and readme not in MUST_BE_SENT else [])
    sent += _package_files(pyproject, root)
    problems += [f".dockerignore: {p} would be sent to the build" for p in excluded if not is_ignored(rules, p)]
    problems += [f".dockerignore: {p} is excluded, but the images need it" for p in sent if is_ignored(rules, p)]
    for flavour, text_ in dockerfiles.items():
        for ins, sources in context_sources(parse_dockerfile(text_)):
            for source in sources:
                if source == ".":
                    continue  # the whole context: what this file sends, checked above
                path = root / source
                files = (
                    [source]
                    if not path.is_dir()
                    else [
                        f.relative_to(root).as_posix()
                        for f in sorted(path.rglob("*"))
                        if f.is_file() and "__pycache__" not in f.parts
                    ]
                )
                for f in files:
                    if is_ignored(rules, f):
                        problems.append(
                            f".dockerignore excludes {f}, which {DOCKERFILES[flavour]} copies (line {ins.line})"
                        )
    return problems
