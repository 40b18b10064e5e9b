"""The pin file, images/versions.txt, against pyproject.toml and the environment this runs in: its lines are exact
pins and ``#@ NAME=value`` settings, it pins every package ftc declares for the images at a version pyproject.toml
allows and installed here, it is closed under what those packages pull in, and its base images and torch indexes
agree. ``packaging`` is imported by the functions that need it."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.requirements import Requirement

PIN_FILE = "images/versions.txt"
PIN_FILE_GPU = "images/versions-gpu.txt"  # versions.txt with torch's CUDA build and what it and the `gpu` extra add
# the extras the images install besides [project] dependencies: the training stack, and the stores the runtime
# re-verifies remote inputs in (s3://, gs://; DVC inputs are read through the same stores and need no extra)
IMAGE_EXTRAS = ("train", "s3", "gcs")
GPU_EXTRAS = (*IMAGE_EXTRAS, "gpu")  # and liger-kernel in the GPU image
# the pin file's setting that names the extras the tracker variant may add (--build-arg TRACKERS=...): the clients a
# spec's `logger:` needs, pinned in the same file (a pin an image does not install is simply not installed)
TRACKER_SETTING = "TRACKER_EXTRAS"
# the pins of versions.txt that versions-gpu.txt replaces (torch's CUDA build)
GPU_REPLACES = ("torch",)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")
# torch's CUDA builds bring their CUDA runtime as packages torch itself pins; the pin file covers everything else
TORCH_CUDA_RUNTIME = re.compile(r"nvidia-.*|cuda-.*|triton")


def canonicalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PinFile:
    """What images/versions.txt says."""

    pins: dict[str, tuple[str, str]] = field(default_factory=dict)  # canonical name -> (name as written, version)
    settings: dict[str, str] = field(default_factory=dict)  # `#@ NAME=value` lines
    problems: list[str] = field(default_factory=list)  # lines that are not what the file allows


def parse_pin_file(text: str, where: str = PIN_FILE) -> PinFile:
    """The pins (exact ``name==version`` lines) and settings (``#@ NAME=value`` lines) of a pin file (``where``: its
    path in messages); every other non-comment line is a problem."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import Version

    out = PinFile()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#@"):
            name, sep, value = line[2:].strip().partition("=")
            if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or not value.strip():
                out.problems.append(f"{where}:{number}: `{line}` is not a `#@ NAME=value` line")
            elif name in out.settings:
                out.problems.append(f"{where}:{number}: {name} is set twice")
            else:
                out.settings[name] = value.strip()
            continue
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.problems.append(f"{where}:{number}: `{line}` is not a requirement")
            continue
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version
        if not exact or req.extras or req.marker or req.url:
            out.problems.append(f"{where}:{number}: `{line}` is not an exact pin (name==version)")
            continue
        version = specs[0].version
        if Version(version).local is not None:
            out.problems.append(
                f"{where}:{number}: `{line}`: a local version label (+...) picks one build; pin the public version,"
                " the index picks the build"
            )
            continue
        key = canonicalize_name(req.name)
        if key in out.pins:
            out.problems.append(f"{where}:{number}: {req.name} is pinned twice")
            continue
        out.pins[key] = (req.name, version)
    return out


def tracker_extras(pin_file: PinFile) -> tuple[str, ...]:
    """The extras the tracker variant may install: the pin file's ``#@ TRACKER_EXTRAS=`` names (none without it)."""
    return tuple(pin_file.settings.get(TRACKER_SETTING, "").split())


def tracker_problems(pin_file: PinFile, pyproject: dict, providers: tuple[str, ...]) -> list[str]:
    """``#@ TRACKER_EXTRAS=`` names exactly the spec's logger providers (``providers``, from its JSON schema), each
    an extra of pyproject.toml, so every tracker a spec can name has a pinned client an image can carry."""
    if TRACKER_SETTING not in pin_file.settings:
        return [f"{PIN_FILE}: no `#@ {TRACKER_SETTING}=...` line (the extras of the tracker variant)"]
    extras = pyproject["project"].get("optional-dependencies", {})
    named = tracker_extras(pin_file)
    problems = [
        f"{PIN_FILE}: {TRACKER_SETTING} names {name}, which is not an extra of pyproject.toml"
        for name in named
        if name not in extras
    ]
    if sorted(named) != sorted(providers):
        problems.append(
            f"{PIN_FILE}: {TRACKER_SETTING} is {' '.join(named)!r}, the spec's logger providers are"
            f" {' '.join(providers)!r}: they must be the same"
        )
    return problems


def declared_requirements(pyproject: dict, image_extras: tuple[str, ...] = IMAGE_EXTRAS) -> list[Requirement]:
    """What ftc declares for an image: [project] dependencies and the extras of ``image_extras`` (train, s3, gcs; the
    GPU image adds gpu)."""
    from packaging.requirements import Requirement

    project = pyproject["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for extra in image_extras for r in extras[extra]]]


def pyproject_problems(
    pin_file: PinFile, pyproject: dict, image_extras: tuple[str, ...] = IMAGE_EXTRAS, where: str = PIN_FILE
) -> list[str]:
    """Every package ftc declares for an image (``image_extras``) is pinned in ``pin_file`` (``where``), at a version
    its requirement allows."""
    problems = []
    for req in declared_requirements(pyproject, image_extras):
        pin = pin_file.pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: declared in pyproject.toml ({req}) but not pinned in {where}")
        elif not req.specifier.contains(pin[1], prereleases=True):
            problems.append(f"{pin[0]}=={pin[1]} in {where} does not satisfy pyproject.toml's `{req}`")
    return problems


def environment_problems(pin_file: PinFile, version_of: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """Every pin is the version installed here, so the images run what the tests ran (torch's +cpu/+cuXYZ label
    names the build, not the version, and is ignored). ``version_of`` reads an installed version."""
    from packaging.version import Version

    problems = []
    for name, pinned in pin_file.pins.values():
        try:
            installed = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={pinned} is pinned, but {name} is not installed in the test environment")
            continue
        if Version(installed).public != Version(pinned).public:
            problems.append(
                f"{name}=={pinned} is pinned, but the test environment has {name} {installed}:"
                f" pin {name}=={Version(installed).public}"
            )
    return problems


def closure_problems(
    pin_file: PinFile, pyproject: dict, distribution: Callable = importlib.metadata.distribution
) -> list[str]:
    """The pin file is closed: everything ftc's declared packages (dependencies, train, s3, gcs and the tracker
    extras of ``TRACKER_EXTRAS``) pull in here is pinned, and nothing else is. A requirement's own extras
    (`pkg[extra]`) are followed too, as pip follows them."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.version import Version

    env = default_environment()

    def applies(req: Requirement, extras: set[str]) -> bool:
        return req.marker is None or any(req.marker.evaluate({**env, "extra": extra}) for extra in extras)

    found: dict[str, tuple[str, str]] = {}
    walked: dict[str, set[str]] = {}  # package -> its extras whose requirements are queued ("": the package itself)
    problems = []
    known = pyproject["project"].get("optional-dependencies", {})
    declared = (*IMAGE_EXTRAS, *(x for x in tracker_extras(pin_file) if x in known))  # others: tracker_problems
    todo = [(req, None) for req in declared_requirements(pyproject, declared) if applies(req, {""})]
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
            problems.append(
                f"{req.name} (needed by {parent or 'pyproject.toml'}) is not installed in the test environment"
            )
            continue
        walked.setdefault(key, set()).update(extras)
        found[key] = (dist.metadata["Name"], Version(dist.version).public)
        todo.extend((r, key) for r in map(Requirement, dist.requires or []) if applies(r, extras))
    for key in sorted(found.keys() - pin_file.pins.keys()):
        name, version = found[key]
        problems.append(
            f"{name} is installed with ftc's packages but not pinned: add `{name}=={version}` to {PIN_FILE}"
        )
    for key in sorted(pin_file.pins.keys() - found.keys()):
        problems.append(
            f"{pin_file.pins[key][0]} is pinned but nothing ftc declares needs it here: remove it from {PIN_FILE}"
        )
    return problems


def settings_problems(pin_file: PinFile, python: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """The base image is pinned by digest and has the tests' Python (``python``: this one by default), and torch's
    CPU index is an https CPU index."""
    problems = []
    settings = pin_file.settings
    for name in ("BASE_IMAGE", "TORCH_INDEX_CPU"):
        if name not in settings:
            problems.append(f"{PIN_FILE}: no `#@ {name}=...` line")
    if "BASE_IMAGE" in settings and not DIGEST.search(settings["BASE_IMAGE"]):
        problems.append(
            f"{PIN_FILE}: BASE_IMAGE {settings['BASE_IMAGE']} is not pinned by digest (image:tag@sha256:<64 hex>;"
            " see images/README.md)"
        )
    if "TORCH_INDEX_CPU" in settings and not settings["TORCH_INDEX_CPU"].startswith("https://"):
        problems.append(f"{PIN_FILE}: TORCH_INDEX_CPU {settings['TORCH_INDEX_CPU']} is not an https URL")
    if "BASE_IMAGE" in settings:
        m = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)", settings["BASE_IMAGE"])
        if not m:
            problems.append(f"{PIN_FILE}: BASE_IMAGE {settings['BASE_IMAGE']} is not a python:X.Y image")
        elif (int(m[1]), int(m[2])) != tuple(python):
            problems.append(
                f"{PIN_FILE}: BASE_IMAGE has Python {m[1]}.{m[2]}, the tests run on {python[0]}.{python[1]}"
            )
    if "TORCH_INDEX_CPU" in settings and not settings["TORCH_INDEX_CPU"].rstrip("/").endswith("/cpu"):
        problems.append(f"{PIN_FILE}: TORCH_INDEX_CPU {settings['TORCH_INDEX_CPU']} is not a CPU index (.../cpu)")
    return problems


def gpu_pin_problems(gpu: PinFile, cpu: PinFile, pyproject: dict) -> list[str]:
    """The GPU pin file is the CPU one with torch's CUDA build: every pin of versions.txt but torch at the same
    version (the tracker variant's too), torch and liger-kernel (the `gpu` extra) pinned as pyproject.toml allows,
    and no settings (those live in versions.txt). Its closure is checked where it is installed: in the image build
    (``--installed``)."""
    problems = [f"{PIN_FILE_GPU}: `#@ {name}=` settings belong in {PIN_FILE}" for name in gpu.settings]
    for key, (name, version) in cpu.pins.items():
        if key in GPU_REPLACES:
            continue
        if key not in gpu.pins:
            problems.append(f"{name}=={version} is pinned in {PIN_FILE} but not in {PIN_FILE_GPU}")
        elif gpu.pins[key][1] != version:
            problems.append(
                f"{name} is {version} in {PIN_FILE} but {gpu.pins[key][1]} in {PIN_FILE_GPU}: the images share"
                " every version but torch's"
            )
    known = pyproject["project"].get("optional-dependencies", {})
    trackers = tuple(x for x in tracker_extras(cpu) if x in known)
    return problems + pyproject_problems(gpu, pyproject, (*GPU_EXTRAS, *trackers), PIN_FILE_GPU)


def installed_problems(
    pin_file: PinFile, where: str = PIN_FILE, distributions: Callable = importlib.metadata.distributions
) -> list[str]:
    """Every package installed in this environment (an image's, as it is built) is pinned in ``pin_file`` at the
    version installed: nothing came from an unpinned resolution. pip and ftc itself are not pins."""
    from packaging.version import Version

    problems = []
    for dist in distributions():
        name = dist.metadata["Name"]
        key = canonicalize_name(name)
        if key in ("pip", "ftc"):
            continue
        pin = pin_file.pins.get(key)
        if pin is None:
            problems.append(f"{name} {dist.version} is installed but not pinned in {where}")
        elif Version(dist.version).public != Version(pin[1]).public:
            problems.append(f"{name} {dist.version} is installed but {where} pins {pin[1]}")
    return problems
