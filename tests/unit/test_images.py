"""The runtime images: every version lives in images/versions.txt, and the Dockerfiles follow it.

Static checks, no container engine. Each rule is a function that returns the problems it finds (an empty list when
the files keep it); the tests run them on the repository, then on broken copies to prove each rule catches what
it is meant to catch.
"""

from __future__ import annotations

import importlib.metadata
import json
import posixpath
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
PIN_FILE = "images/versions.txt"
DOCKERFILES = {"cpu": "images/Dockerfile.cpu", "gpu": "images/Dockerfile.gpu"}
BASE_IMAGE_ARG = {"cpu": "PYTHON_IMAGE", "gpu": "CUDA_IMAGE"}
TORCH_INDEX = {"cpu": "TORCH_INDEX_CPU", "gpu": "TORCH_INDEX_GPU"}
ENTRYPOINT = ["python", "-m", "ftc.runtime"]
# the extras the images install besides [project] dependencies: the training stack, and the stores the runtime
# re-verifies remote inputs in (s3://, gs://; DVC inputs are read through the same stores and need no extra)
IMAGE_EXTRAS = ("train", "s3", "gcs")
VENV = "/opt/ftc"
# what the final stage must set: no pip cache, no stray bytecode, unbuffered logs, and never a model hub
REQUIRED_ENV = {"PIP_NO_CACHE_DIR": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
REQUIRED_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.title")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(?:OR)?D|CREDENTIAL|PRIVATE|(?:^|_)(?:API_?)?KEYS?(?:_|$)", re.IGNORECASE)
COMPILER = re.compile(r"(?<![\w-])(?:build-essential|gcc|g\+\+|clang|cmake|nvcc|cuda-toolkit[\w-]*|[\w.+]+-dev)(?![\w-])")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")
# torch's CUDA builds bring their CUDA runtime as packages torch itself pins; the pin file covers everything else
TORCH_CUDA_RUNTIME = re.compile(r"nvidia-.*|cuda-.*|triton")


# --- the pin file ----------------------------------------------------------------------------------------------------


@dataclass
class PinFile:
    pins: dict[str, tuple[str, str]] = field(default_factory=dict)  # canonical name -> (name as written, version)
    settings: dict[str, str] = field(default_factory=dict)  # `#@ NAME=value` lines
    problems: list[str] = field(default_factory=list)  # lines that are not what the file allows


def parse_pin_file(text: str) -> PinFile:
    out = PinFile()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#@"):
            name, sep, value = line[2:].strip().partition("=")
            if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or not value.strip():
                out.problems.append(f"{PIN_FILE}:{number}: `{line}` is not a `#@ NAME=value` line")
            elif name in out.settings:
                out.problems.append(f"{PIN_FILE}:{number}: {name} is set twice")
            else:
                out.settings[name] = value.strip()
            continue
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.problems.append(f"{PIN_FILE}:{number}: `{line}` is not a requirement")
            continue
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version
        if not exact or req.extras or req.marker or req.url:
            out.problems.append(f"{PIN_FILE}:{number}: `{line}` is not an exact pin (name==version)")
            continue
        version = specs[0].version
        if Version(version).local is not None:
            out.problems.append(f"{PIN_FILE}:{number}: `{line}`: a local version label (+...) picks one build; pin the public version, the index picks the build")
            continue
        key = canonicalize_name(req.name)
        if key in out.pins:
            out.problems.append(f"{PIN_FILE}:{number}: {req.name} is pinned twice")
            continue
        out.pins[key] = (req.name, version)
    return out


def declared_requirements(pyproject: dict) -> list[Requirement]:
    """What ftc declares for the images: [project] dependencies and the extras of IMAGE_EXTRAS (train, s3, gcs)."""
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for extra in IMAGE_EXTRAS for r in extras[extra]]]


def pyproject_problems(pin_file: PinFile, pyproject: dict) -> list[str]:
    """Every package ftc declares is pinned, at a version its requirement allows."""
    problems = []
    for req in declared_requirements(pyproject):
        pin = pin_file.pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: declared in pyproject.toml ({req}) but not pinned in {PIN_FILE}")
        elif not req.specifier.contains(pin[1], prereleases=True):
            problems.append(f"{pin[0]}=={pin[1]} does not satisfy pyproject.toml's `{req}`")
    return problems


def environment_problems(pin_file: PinFile, version_of: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """Every pin is the version installed here, so the images run what the tests ran (torch's +cpu/+cuXYZ label
    names the build, not the version, and is ignored)."""
    problems = []
    for name, pinned in pin_file.pins.values():
        try:
            installed = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={pinned} is pinned, but {name} is not installed in the test environment")
            continue
        if Version(installed).public != Version(pinned).public:
            problems.append(f"{name}=={pinned} is pinned, but the test environment has {name} {installed}: pin {name}=={Version(installed).public}")
    return problems


def closure_problems(pin_file: PinFile, pyproject: dict, distribution: Callable = importlib.metadata.distribution) -> list[str]:
    """The pin file is closed: everything ftc's declared packages (dependencies, train, s3 and gcs) pull in here is
    pinned, and nothing else is. A requirement's own extras (`pkg[extra]`) are followed too, as pip follows them."""
    env = default_environment()

    def applies(req: Requirement, extras: set[str]) -> bool:
        return req.marker is None or any(req.marker.evaluate({**env, "extra": extra}) for extra in extras)

    found: dict[str, tuple[str, str]] = {}
    walked: dict[str, set[str]] = {}  # package -> its extras whose requirements are queued ("": the package itself)
    problems = []
    todo = [(req, None) for req in declared_requirements(pyproject) if applies(req, {""})]
    while todo:
        req, parent = todo.pop()
        key = canonicalize_name(req.name)
        if parent == "torch" and TORCH_CUDA_RUNTIME.fullmatch(key):
            continue
        extras = ({""} | {canonicalize_name(e) for e in req.extras}) - walked.get(key, set())
        if not extras:
            continue
        try:
            dist = distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req.name} (needed by {parent or 'pyproject.toml'}) is not installed in the test environment")
            continue
        walked.setdefault(key, set()).update(extras)
        found[key] = (dist.metadata["Name"], Version(dist.version).public)
        todo.extend((r, key) for r in map(Requirement, dist.requires or []) if applies(r, extras))
    for key in sorted(found.keys() - pin_file.pins.keys()):
        name, version = found[key]
        problems.append(f"{name} is installed with ftc's packages but not pinned: add `{name}=={version}` to {PIN_FILE}")
    for key in sorted(pin_file.pins.keys() - found.keys()):
        problems.append(f"{pin_file.pins[key][0]} is pinned but nothing ftc declares needs it here: remove it from {PIN_FILE}")
    return problems


def settings_problems(pin_file: PinFile, python: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """The base images are pinned by digest, the CPU image has the tests' Python, and the GPU image's CUDA and
    torch's CUDA index agree."""
    problems = []
    settings = pin_file.settings
    for name in ("PYTHON_IMAGE", "CUDA_IMAGE", "TORCH_INDEX_CPU", "TORCH_INDEX_GPU"):
        if name not in settings:
            problems.append(f"{PIN_FILE}: no `#@ {name}=...` line")
    for name in ("PYTHON_IMAGE", "CUDA_IMAGE"):
        if name in settings and not DIGEST.search(settings[name]):
            problems.append(f"{PIN_FILE}: {name} {settings[name]} is not pinned by digest (image:tag@sha256:<64 hex>; see images/README.md)")
    for name in ("TORCH_INDEX_CPU", "TORCH_INDEX_GPU"):
        if name in settings and not settings[name].startswith("https://"):
            problems.append(f"{PIN_FILE}: {name} {settings[name]} is not an https URL")
    if "PYTHON_IMAGE" in settings:
        m = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)", settings["PYTHON_IMAGE"])
        if not m:
            problems.append(f"{PIN_FILE}: PYTHON_IMAGE {settings['PYTHON_IMAGE']} is not a python:X.Y image")
        elif (int(m[1]), int(m[2])) != tuple(python):
            problems.append(f"{PIN_FILE}: PYTHON_IMAGE has Python {m[1]}.{m[2]}, the tests run on {python[0]}.{python[1]}")
    if "TORCH_INDEX_CPU" in settings and not settings["TORCH_INDEX_CPU"].rstrip("/").endswith("/cpu"):
        problems.append(f"{PIN_FILE}: TORCH_INDEX_CPU {settings['TORCH_INDEX_CPU']} is not a CPU index (.../cpu)")
    if "CUDA_IMAGE" in settings and "TORCH_INDEX_GPU" in settings:
        cuda = re.match(r"(?:[\w.-]+/)*cuda:(\d+)\.(\d+)\.\d+-(\w+)-", settings["CUDA_IMAGE"])
        index = re.search(r"/cu(\d+)/?\Z", settings["TORCH_INDEX_GPU"])
        if not cuda or not index:
            problems.append(f"{PIN_FILE}: cannot read the CUDA version of CUDA_IMAGE {settings['CUDA_IMAGE']} or TORCH_INDEX_GPU {settings['TORCH_INDEX_GPU']}")
        elif index[1] != f"{cuda[1]}{cuda[2]}":
            problems.append(f"{PIN_FILE}: CUDA_IMAGE is CUDA {cuda[1]}.{cuda[2]} but TORCH_INDEX_GPU is cu{index[1]}: they must match (cu{cuda[1]}{cuda[2]})")
        elif cuda[3] == "devel":
            problems.append(f"{PIN_FILE}: CUDA_IMAGE {settings['CUDA_IMAGE']} is a -devel image: the runtime image carries no compiler")
    return problems


# --- the Dockerfiles -------------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined and comment lines dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(p.strip() for p in pending if p.strip())
        pending = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def _assignments(args: str) -> dict[str, str | None]:
    """NAME=value pairs of ARG, ENV or LABEL (ENV's old `NAME value` form too)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:]) or None}
    return {name: value for name, _, value in (t.partition("=") for t in tokens)}


def _stages(instructions: list[Instruction]) -> tuple[list[Instruction], list[list[Instruction]]]:
    """(global ARGs before the first FROM, the stages, each starting with its FROM)."""
    head: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
        else:
            head.append(ins)
    return head, stages


def _name_pattern(name: str) -> str:
    return r"[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", canonicalize_name(name)))


def dockerfile_problems(text: str, flavour: str, pin_file: PinFile, pyproject: dict, where: str) -> list[str]:
    problems = []
    instructions = parse_dockerfile(text)
    head, stages = _stages(instructions)

    # (2) the base image and the torch index come from the pin file; no version is written here
    global_args = {}
    for ins in head:
        if ins.keyword != "ARG":
            problems.append(f"{where}:{ins.line}: {ins.keyword} before the first FROM")
            continue
        global_args.update(_assignments(ins.args))
    base_arg = BASE_IMAGE_ARG[flavour]
    for name, value in global_args.items():
        if name in pin_file.settings and value != pin_file.settings[name]:
            problems.append(f"{where}: ARG {name} defaults to {value!r}, {PIN_FILE} says {pin_file.settings[name]!r}: they must be equal")
    if base_arg not in global_args:
        problems.append(f"{where}: no `ARG {base_arg}=...` before the first FROM (its default must equal {PIN_FILE}'s)")
    stage_names: set[str] = set()
    for stage in stages:
        image, *rest = shlex.split(stage[0].args)
        ref = re.fullmatch(r"\$\{?(\w+)\}?", image)
        if ref is None and image not in stage_names:
            problems.append(f"{where}:{stage[0].line}: FROM {image} names an image directly; use `FROM ${{{base_arg}}}` (the ARG that follows {PIN_FILE})")
        elif ref is not None and ref[1] not in pin_file.settings:
            problems.append(f"{where}:{stage[0].line}: FROM ${{{ref[1]}}}: {ref[1]} is not a base image of {PIN_FILE}")
        if len(rest) == 2 and rest[0].upper() == "AS":
            stage_names.add(rest[1])
    pinned_settings = {(name, value) for name, value in pin_file.settings.items()}
    declared = {canonicalize_name(r.name) for r in declared_requirements(pyproject)}
    for ins in instructions:
        if ins.keyword == "ARG" and set(_assignments(ins.args).items()) <= pinned_settings:
            continue  # a base image ARG, checked against the pin file above
        if re.search(r"==\s*v?\d", ins.args):
            problems.append(f"{where}:{ins.line}: `==<version>` in a Dockerfile: versions belong in {PIN_FILE}")
        for key, (name, version) in pin_file.pins.items():
            if re.search(rf"(?i)(?<![\w.-]){_name_pattern(name)}(?![\w-])\s*(?:[=<>~!]=?|@|\s)\s*v?\d+(?:\.\d+)+", ins.args):
                problems.append(f"{where}:{ins.line}: a version of {name} is written in the Dockerfile: versions belong in {PIN_FILE}")
            elif key in declared and re.search(rf"(?<![\w.+-]){re.escape(version)}(?![\w+-]|\.\d)", ins.args):
                problems.append(f"{where}:{ins.line}: {name}'s pinned version {version} is written in the Dockerfile: versions belong in {PIN_FILE}")
    body = "\n".join(ins.args for ins in instructions)
    if f"TORCH_INDEX_{flavour.upper()}" not in body:
        problems.append(f"{where}: torch's index is not read from {PIN_FILE} (#@ {TORCH_INDEX[flavour]}=)")
    if "download.pytorch.org" in body:
        problems.append(f"{where}: torch's index URL is written in the Dockerfile: it belongs in {PIN_FILE}")
    if not any(i.keyword == "COPY" and shlex.split(i.args)[0] == PIN_FILE for i in instructions):
        problems.append(f"{where}: does not COPY {PIN_FILE} (pip installs with it as constraints)")
    # what ftc declares is read from pyproject.toml by a RUN that then installs it with the pin file as constraints
    reads = [i.args for i in instructions if i.keyword == "RUN" and "pyproject.toml" in i.args and "optional-dependencies" in i.args]
    if not reads:
        problems.append(f"{where}: no RUN reads [project] dependencies and the extras {', '.join(IMAGE_EXTRAS)} from pyproject.toml to install them")
    for extra in IMAGE_EXTRAS if reads else ():
        if not any(re.search(rf"""["']{re.escape(extra)}["']""", args) for args in reads):
            problems.append(f"{where}: does not install the `{extra}` extra of pyproject.toml (the images install [project] dependencies and the extras {', '.join(IMAGE_EXTRAS)})")
    for ins in instructions:
        for command in re.split(r"&&|;|\|\|", ins.args) if ins.keyword == "RUN" else []:
            if re.search(r"\bpip\s+install\b", command) and f"-c {PIN_FILE}" not in command:
                targets = [t for t in shlex.split(command.split("install", 1)[1]) if not t.startswith("-")]
                if not (targets == ["."] and "--no-deps" in command):  # ftc itself, after its pinned dependencies
                    problems.append(f"{where}:{ins.line}: `{command.strip()}` installs without the pin file as constraints (-c {PIN_FILE})")
    version = pyproject["project"]["version"]
    for ins in instructions:
        if ins.keyword == "ARG" and "FTC_VERSION" in _assignments(ins.args) and _assignments(ins.args)["FTC_VERSION"] != version:
            problems.append(f"{where}:{ins.line}: ARG FTC_VERSION defaults to {_assignments(ins.args)['FTC_VERSION']!r}, pyproject.toml's version is {version!r}")

    # (4) no build argument or environment variable that looks like a credential, in any stage
    for ins in instructions:
        if ins.keyword in ("ARG", "ENV"):
            for name in _assignments(ins.args):
                if SECRET_NAME.search(name):
                    problems.append(f"{where}:{ins.line}: {ins.keyword} {name} looks like a credential: build arguments and ENV stay in the image's layers and history")

    # (3) and hygiene: the final stage copies only the environment, runs as a fixed non-root uid, runs ftc.runtime
    if len(stages) < 2:
        problems.append(f"{where}: not a multi-stage build (a builder stage and a final stage)")
        return problems
    final = stages[-1]
    copies = [i for i in final if i.keyword == "COPY"]
    if not any(re.search(rf"--from=\S+\s+{re.escape(VENV)}/?\s+{re.escape(VENV)}/?$", i.args) for i in copies):
        problems.append(f"{where}: the final stage does not COPY --from=<builder> {VENV} {VENV}")
    for ins in copies:
        if "--from=" not in ins.args:
            problems.append(f"{where}:{ins.line}: the final stage copies from the build context ({ins.args}); it takes only {VENV} from the builder")
    users = [i for i in final if i.keyword == "USER"]
    if not users:
        problems.append(f"{where}: the final stage sets no USER: it would run as root")
    else:
        user = users[-1].args.split(":")[0].strip()
        if not user.isdigit():
            problems.append(f"{where}:{users[-1].line}: USER {users[-1].args}: use a numeric uid (runtimes check runAsNonRoot by number)")
        elif int(user) == 0:
            problems.append(f"{where}:{users[-1].line}: USER {users[-1].args} is root")
    entry = [i for i in final if i.keyword == "ENTRYPOINT"]
    try:
        entrypoint = json.loads(entry[-1].args) if entry else None
    except json.JSONDecodeError:
        entrypoint = entry[-1].args
    if entrypoint != ENTRYPOINT:
        problems.append(f"{where}: ENTRYPOINT is {entrypoint!r}, not {json.dumps(ENTRYPOINT)}")
    if not any(i.keyword == "WORKDIR" for i in final):
        problems.append(f"{where}: the final stage sets no WORKDIR")
    env: dict[str, str | None] = {}
    labels: dict[str, str | None] = {}
    for ins in final:
        if ins.keyword == "ENV":
            env.update(_assignments(ins.args))
        elif ins.keyword == "LABEL":
            labels.update(_assignments(ins.args))
    for name, value in REQUIRED_ENV.items():
        if env.get(name) != value:
            problems.append(f"{where}: the final stage does not set ENV {name}={value}")
    for name in REQUIRED_LABELS:
        if name not in labels:
            problems.append(f"{where}: no LABEL {name}")
    for ins in final:
        if ins.keyword == "RUN" and COMPILER.search(ins.args):
            problems.append(f"{where}:{ins.line}: the final stage installs a compiler or build headers ({COMPILER.search(ins.args)[0]})")
    return problems


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
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for include, pattern in rules:
        if any(pattern.match(c) for c in candidates):
            ignored = not include
    return ignored


# paths that must never reach the build context, and the files `pip install .` needs
MUST_BE_EXCLUDED = [
    ".venv/bin/python", ".git/HEAD", "runs/quickstart/plan.json", "examples/quickstart/model/model.safetensors",
    "examples/smollm2-arithmetic/weights/model.gguf", "tests/data/schemas/x.json", ".ftc-test-assets/llm.whl",
    "ftc/__pycache__/cli.cpython-311.pyc", "runtime/__pycache__/train.cpython-311.pyc", "ftc.egg-info/PKG-INFO",
    ".pytest_cache/v/cache", ".ruff_cache/x", ".dvc/config", "bench/results/x.json", "build/lib/ftc/cli.py",
    "dist/ftc-0.1.0.tar.gz", "job.plan.json",
]
MUST_BE_SENT = ["pyproject.toml", "README.md", "ftc/cli.py", "spec/job.schema.json", "compiler/_compile.py", "runtime/train.py", PIN_FILE]


def dockerignore_problems(text: str, dockerfiles: dict[str, str], root: Path) -> list[str]:
    rules = dockerignore_rules(text)
    problems = [f".dockerignore: {p} would be sent to the build" for p in MUST_BE_EXCLUDED if not is_ignored(rules, p)]
    problems += [f".dockerignore: {p} is excluded, but the images need it" for p in MUST_BE_SENT if is_ignored(rules, p)]
    for flavour, text_ in dockerfiles.items():
        for ins in parse_dockerfile(text_):
            if ins.keyword not in ("COPY", "ADD"):
                continue
            tokens = [t for t in shlex.split(ins.args) if not t.startswith("--")]
            if any(t.startswith("--from=") for t in shlex.split(ins.args)):
                continue
            for source in tokens[:-1]:
                source = posixpath.normpath(source)
                path = root / source
                files = [source] if not path.is_dir() else [
                    f.relative_to(root).as_posix() for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                ]
                for f in files:
                    if is_ignored(rules, f):
                        problems.append(f".dockerignore excludes {f}, which {DOCKERFILES[flavour]} copies (line {ins.line})")
    return problems


# --- everything at once, for a folder laid out like the repository -----------------------------------------------


def image_problems(root: Path) -> list[str]:
    pin_file = parse_pin_file((root / PIN_FILE).read_text())
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    dockerfiles = {flavour: (root / path).read_text() for flavour, path in DOCKERFILES.items()}
    problems = list(pin_file.problems)
    problems += pyproject_problems(pin_file, pyproject)
    problems += environment_problems(pin_file)
    problems += closure_problems(pin_file, pyproject)
    problems += settings_problems(pin_file)
    for flavour, text in dockerfiles.items():
        problems += dockerfile_problems(text, flavour, pin_file, pyproject, DOCKERFILES[flavour])
    problems += dockerignore_problems((root / ".dockerignore").read_text(), dockerfiles, root)
    return problems


# --- the repository keeps every rule -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pin_file() -> PinFile:
    return parse_pin_file((REPO / PIN_FILE).read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


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
    final = _stages(parse_dockerfile((REPO / DOCKERFILES[flavour]).read_text()))[1][-1]
    assert [i.args for i in final if i.keyword == "USER"][-1] == "1000:1000"
    assert json.loads([i.args for i in final if i.keyword == "ENTRYPOINT"][-1]) == ENTRYPOINT


def test_the_build_context_is_small_and_complete():
    dockerfiles = {flavour: (REPO / path).read_text() for flavour, path in DOCKERFILES.items()}
    assert dockerignore_problems((REPO / ".dockerignore").read_text(), dockerfiles, REPO) == []


# --- and each rule catches what it is for --------------------------------------------------------------------------


def _edit(path: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        target = root / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}: update the test"
        target.write_text(text.replace(old, new, 1))

    return apply


def _edit_pyproject(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """pyproject.toml rewritten with only what these checks read."""

    def apply(root: Path) -> None:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        change(project)
        deps = ", ".join(json.dumps(r) for r in project["dependencies"])
        extras = "".join(
            f"{extra} = [{', '.join(json.dumps(r) for r in project['optional-dependencies'][extra])}]\n" for extra in IMAGE_EXTRAS
        )
        (root / "pyproject.toml").write_text(
            f'[project]\nname = "ftc"\nversion = {json.dumps(project["version"])}\ndependencies = [{deps}]\n\n'
            f"[project.optional-dependencies]\n{extras}"
        )

    return apply


def _set_extra(extra: str, requirements: list[str]) -> Callable[[dict], None]:
    def change(project: dict) -> None:
        project["optional-dependencies"][extra] = requirements

    return change


TORCH_PIN = "torch==" + parse_pin_file((REPO / PIN_FILE).read_text()).pins.get("torch", ("torch", "2.13.0"))[1]

BROKEN = {
    # the pin file
    "a range, not a pin": (_edit(PIN_FILE, "\npeft==", "\npeft>="), "is not an exact pin"),
    "a declared package not pinned": (_edit(PIN_FILE, "\npeft==", "\n# peft=="), "peft: declared in pyproject.toml"),
    "a pin outside pyproject's range": (_edit(PIN_FILE, "\ntransformers==", "\ntransformers==4.57.6\n# "), "does not satisfy pyproject.toml"),
    "a pin that is not what the tests ran": (_edit(PIN_FILE, "\naccelerate==", "\naccelerate==1.0.0\n# "), "the test environment has accelerate"),
    "a local version label": (_edit(PIN_FILE, f"\n{TORCH_PIN}\n", f"\n{TORCH_PIN}+cpu\n"), "local version label"),
    "a package pinned twice": (_edit(PIN_FILE, "\npeft==", "\npeft==0.21.2\npeft=="), "pinned twice"),
    "a transitive package not pinned": (_edit(PIN_FILE, "\nnumpy==", "\n# numpy=="), "add `numpy=="),
    "a pin nothing needs": (_edit(PIN_FILE, "\nnumpy==", "\ndvc==3.50.0\nnumpy=="), "dvc is pinned but nothing ftc declares needs it"),
    "an s3 package not pinned": (_edit(PIN_FILE, "\nboto3==", "\n# boto3=="), "boto3: declared in pyproject.toml"),
    "a gcs package not pinned": (_edit(PIN_FILE, "\ngoogle-cloud-storage==", "\n# google-cloud-storage=="), "google-cloud-storage: declared in pyproject.toml"),
    "a gcs pin outside pyproject's range": (_edit(PIN_FILE, "\ngoogle-cloud-storage==", "\ngoogle-cloud-storage==2.9.0\n# "), "does not satisfy pyproject.toml's `google-cloud-storage"),
    "what the s3 extra pulls in not pinned": (_edit(PIN_FILE, "\nbotocore==", "\n# botocore=="), "add `botocore=="),
    "what the gcs extra pulls in not pinned": (_edit(PIN_FILE, "\nprotobuf==", "\n# protobuf=="), "add `protobuf=="),
    "a base image by tag only": (_edit(PIN_FILE, "#@ CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:", "#@ CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04#"), "not pinned by digest"),
    "torch's CUDA index and the CUDA image disagree": (_edit(PIN_FILE, "whl/cu130", "whl/cu128"), "they must match"),
    "the CPU image's Python is not the tests'": (_edit(PIN_FILE, "#@ PYTHON_IMAGE=python:3.11.7-slim", "#@ PYTHON_IMAGE=python:3.9.18-slim"), "the tests run on"),
    "a new requirement in the train extra": (
        _edit_pyproject(lambda p: p["optional-dependencies"]["train"].append("rich-click>=1")),
        "rich-click: declared in pyproject.toml",
    ),
    "a new requirement in the gcs extra": (_edit_pyproject(_set_extra("gcs", ["google-cloud-storage>=2.10", "gcsfs>=2023.1"])), "gcsfs: declared in pyproject.toml"),
    "an extra of a dependency": (_edit_pyproject(_set_extra("s3", ["boto3[crt]>=1.28"])), "awscrt (needed by botocore) is not installed"),
    # the Dockerfiles
    "a version in a RUN": (_edit(DOCKERFILES["cpu"], "pip install --no-deps --no-build-isolation .", "pip install --no-deps --no-build-isolation . numpy==2.4.6"), "`==<version>` in a Dockerfile"),
    "a version in an ENV": (_edit(DOCKERFILES["gpu"], "    HOME=/home/ftc", f"    HOME=/home/ftc TORCH_VERSION={TORCH_PIN.split('==')[1]}"), "pinned version"),
    "a version after a package name": (_edit(DOCKERFILES["cpu"], "-c images/versions.txt torch\n", "-c images/versions.txt 'torch>=2.13'\n"), "a version of torch is written"),
    "a base image ARG that differs from the pin file": (_edit(DOCKERFILES["gpu"], "ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base", "ARG CUDA_IMAGE=nvidia/cuda:13.0.1-base"), "they must be equal"),
    "a base image named in FROM": (_edit(DOCKERFILES["cpu"], "FROM ${PYTHON_IMAGE} AS builder", "FROM python:3.11-slim AS builder"), "names an image directly"),
    "torch's index written in the Dockerfile": (_edit(DOCKERFILES["cpu"], '--index-url "$index"', "--index-url https://download.pytorch.org/whl/cpu"), "torch's index URL is written"),
    "ftc's version label out of date": (_edit(DOCKERFILES["cpu"], "ARG FTC_VERSION=", "ARG FTC_VERSION=9"), "pyproject.toml's version"),
    "root": (_edit(DOCKERFILES["cpu"], "USER 1000:1000", "USER root"), "use a numeric uid"),
    "uid 0": (_edit(DOCKERFILES["gpu"], "USER 1000:1000", "USER 0:0"), "is root"),
    "no USER": (_edit(DOCKERFILES["gpu"], "USER 1000:1000", ""), "sets no USER"),
    "another entry point": (_edit(DOCKERFILES["cpu"], 'ENTRYPOINT ["python", "-m", "ftc.runtime"]', 'ENTRYPOINT ["ftc", "run"]'), "ENTRYPOINT is"),
    "a token as a build argument": (_edit(DOCKERFILES["gpu"], "ARG FTC_REVISION=", "ARG HF_TOKEN=\nARG FTC_REVISION="), "ARG HF_TOKEN looks like a credential"),
    "a key in ENV": (_edit(DOCKERFILES["cpu"], "    HOME=/home/ftc", "    HOME=/home/ftc AWS_SECRET_ACCESS_KEY=x"), "ENV AWS_SECRET_ACCESS_KEY looks like a credential"),
    "a password in a builder stage": (_edit(DOCKERFILES["cpu"], "ENV PIP_NO_CACHE_DIR=1", "ENV PIP_PASSWORD=x PIP_NO_CACHE_DIR=1"), "ENV PIP_PASSWORD looks like a credential"),
    "hub downloads allowed": (_edit(DOCKERFILES["gpu"], "    HF_HUB_OFFLINE=1 \\\n", ""), "ENV HF_HUB_OFFLINE=1"),
    "a pip cache": (_edit(DOCKERFILES["cpu"], "    PIP_NO_CACHE_DIR=1 \\\n    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    HF_HUB_OFFLINE", "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    HF_HUB_OFFLINE"), "ENV PIP_NO_CACHE_DIR=1"),
    "a compiler in the final stage": (_edit(DOCKERFILES["cpu"], "RUN groupadd", "RUN apt-get update && apt-get install -y build-essential\nRUN groupadd"), "installs a compiler"),
    "sources in the final stage": (_edit(DOCKERFILES["cpu"], "COPY --from=builder /opt/ftc /opt/ftc", "COPY --from=builder /opt/ftc /opt/ftc\nCOPY ftc /src/ftc"), "copies from the build context"),
    "one stage": (_edit(DOCKERFILES["cpu"], "\nFROM ${PYTHON_IMAGE}\n", "\n"), "not a multi-stage build"),
    "the environment not copied": (_edit(DOCKERFILES["gpu"], "COPY --from=builder /opt/ftc /opt/ftc", ""), "does not COPY --from=<builder> /opt/ftc"),
    "no OCI source label": (_edit(DOCKERFILES["gpu"], 'org.opencontainers.image.source="${FTC_SOURCE_URL}"', 'org.example.source="${FTC_SOURCE_URL}"'), "no LABEL org.opencontainers.image.source"),
    "the pin file not used": (_edit(DOCKERFILES["cpu"], "pip install -c images/versions.txt -r", "pip install -r"), "without the pin file as constraints"),
    "the s3 extra not installed": (_edit(DOCKERFILES["gpu"], '"train", "s3", "gcs"', '"train", "gcs"'), "does not install the `s3` extra"),
    "the gcs extra not installed": (_edit(DOCKERFILES["cpu"], '"train", "s3", "gcs"', '"train", "s3"'), "does not install the `gcs` extra"),
    "the extras not read from pyproject.toml": (_edit(DOCKERFILES["cpu"], 'p["optional-dependencies"][x]', "[x]"), "no RUN reads [project] dependencies"),
    "the pin file not copied": (_edit(DOCKERFILES["gpu"], "COPY images/versions.txt images/versions.txt", ""), "does not COPY images/versions.txt"),
    # the build context
    "everything sent": (_edit(".dockerignore", "\n*\n", "\n"), ".venv/bin/python would be sent"),
    "a copied folder left out": (_edit(".dockerignore", "!runtime/\n", ""), "which images/Dockerfile.cpu copies"),
    "bytecode sent": (_edit(".dockerignore", "**/__pycache__\n**/*.py[cod]\n", ""), "ftc/__pycache__/cli.cpython-311.pyc would be sent"),
}


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    for path in ("pyproject.toml", "README.md", ".dockerignore", "images"):
        source = REPO / path
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp_path / path)
    for folder in ("ftc", "spec", "compiler", "runtime"):
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


@pytest.mark.parametrize(
    "path, ignored",
    [
        (".venv/lib/python3.11/site-packages/x.py", True),
        ("ftc/cli.py", False),
        ("ftc/__pycache__/cli.cpython-311.pyc", True),
        ("spec/sub/__pycache__/a.pyc", True),
        ("images/versions.txt", False),
        ("examples/quickstart/job.yaml", True),
        ("ftc.egg-info/SOURCES.txt", True),
    ],
)
def test_the_dockerignore_reading_follows_the_last_matching_pattern(path, ignored):
    rules = dockerignore_rules("*\n!ftc/\n!spec\n!images/\n**/__pycache__\n*.egg-info\n")
    assert is_ignored(rules, path) is ignored


def test_a_version_of_another_build_counts_as_the_same_version():
    pins = parse_pin_file("torch==2.13.0\n")
    assert environment_problems(pins, version_of=lambda name: "2.13.0+cu130") == []
    assert environment_problems(pins, version_of=lambda name: "2.14.1+cpu") != []
