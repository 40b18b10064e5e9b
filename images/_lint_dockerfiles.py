"""The Dockerfiles' rules: the base image, the torch index and every version come from the pin file, the
packages are installed from pyproject.toml's declarations with the pin file as constraints, ftc is built from the
whole build context, no build argument or ENV looks like a credential, and the final stage is lean, non-root and runs
ftc.runtime."""

from __future__ import annotations

import json
import re
import shlex

from ._lint_instructions import assignments, context_sources, dockerfile_stages, parse_dockerfile
from ._lint_pins import (
    GPU_EXTRAS,
    IMAGE_EXTRAS,
    PIN_FILE,
    PIN_FILE_GPU,
    TRACKER_SETTING,
    PinFile,
    canonicalize_name,
    declared_requirements,
)

BASE_IMAGE_ARG = "BASE_IMAGE"
PIN_FILES = {"cpu": PIN_FILE, "gpu": PIN_FILE_GPU}  # what each image installs with as constraints
EXTRAS = {"cpu": IMAGE_EXTRAS, "gpu": GPU_EXTRAS}
# what Triton's launchers and Inductor's C++ need at run time, in the GPU image's final stage
GPU_TOOLCHAIN = ("gcc", "g++")
ENTRYPOINT = ["python", "-m", "ftc.runtime"]
VENV = "/opt/ftc"
# what the final stage must set: no pip cache, no stray bytecode, unbuffered logs, and never a model hub
REQUIRED_ENV = {"PIP_NO_CACHE_DIR": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
REQUIRED_LABELS = (
    "org.opencontainers.image.source",
    "org.opencontainers.image.version",
    "org.opencontainers.image.title",
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(?:OR)?D|CREDENTIAL|PRIVATE|(?:^|_)(?:API_?)?KEYS?(?:_|$)", re.IGNORECASE)
COMPILER = re.compile(
    r"(?<![\w-])(?:build-essential|gcc|g\+\+|clang|cmake|nvcc|cuda-toolkit[\w-]*|[\w.+]+-dev)(?![\w-])"
)


def _name_pattern(name: str) -> str:
    return r"[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", canonicalize_name(name)))


def dockerfile_problems(text: str, flavour: str, pin_file: PinFile, pyproject: dict, where: str) -> list[str]:
    """A Dockerfile (``flavour``: cpu or gpu; ``where``: its path in messages) follows the pin file and
    pyproject.toml, writes no version, copies the build context, and builds a lean, non-root final stage (the GPU
    image's with the C/C++ compiler Triton and Inductor need). ``pin_file``: that flavour's pins, with the settings
    of images/versions.txt."""
    instructions = parse_dockerfile(text)
    head, stages = dockerfile_stages(instructions)
    # (2) the base image and the torch index come from the pin file; no version is written here
    problems = _base_image_problems(head, stages, pin_file, where)
    problems += _written_version_problems(instructions, flavour, pin_file, pyproject, where)
    problems += _install_problems(instructions, flavour, pyproject, where)
    # (4) no build argument or environment variable that looks like a credential, in any stage
    problems += _credential_problems(instructions, where)
    # (3) and hygiene: the final stage copies only the environment, runs as a fixed non-root uid, runs ftc.runtime
    if len(stages) < 2:
        problems.append(f"{where}: not a multi-stage build (a builder stage and a final stage)")
        return problems
    return problems + _final_stage_problems(stages[-1], flavour, where)


def _base_image_problems(head: list, stages: list, pin_file: PinFile, where: str) -> list[str]:
    """The ARGs before the first FROM default to the pin file's settings, and every stage starts from one of them
    (or from an earlier stage)."""
    problems = []
    global_args = {}
    for ins in head:
        if ins.keyword != "ARG":
            problems.append(f"{where}:{ins.line}: {ins.keyword} before the first FROM")
            continue
        global_args.update(assignments(ins.args))
    base_arg = BASE_IMAGE_ARG
    for name, value in global_args.items():
        if name in pin_file.settings and value != pin_file.settings[name]:
            problems.append(
                f"{where}: ARG {name} defaults to {value!r}, {PIN_FILE} says {pin_file.settings[name]!r}:"
                " they must be equal"
            )
    if base_arg not in global_args:
        problems.append(f"{where}: no `ARG {base_arg}=...` before the first FROM (its default must equal {PIN_FILE}'s)")
    stage_names: set[str] = set()
    for stage in stages:
        image, *rest = shlex.split(stage[0].args)
        ref = re.fullmatch(r"\$\{?(\w+)\}?", image)
        if ref is None and image not in stage_names:
            problems.append(
                f"{where}:{stage[0].line}: FROM {image} names an image directly; use `FROM ${{{base_arg}}}`"
                f" (the ARG that follows {PIN_FILE})"
            )
        elif ref is not None and ref[1] not in pin_file.settings:
            problems.append(f"{where}:{stage[0].line}: FROM ${{{ref[1]}}}: {ref[1]} is not a base image of {PIN_FILE}")
        if len(rest) == 2 and rest[0].upper() == "AS":
            stage_names.add(rest[1])
    return problems


def _written_version_problems(
    instructions: list, flavour: str, pin_file: PinFile, pyproject: dict, where: str
) -> list[str]:
    """No version, pinned version or torch index URL is written in the Dockerfile: they belong in the pin file."""
    problems = []
    pins_path, extras = PIN_FILES[flavour], EXTRAS[flavour]
    pinned_settings = {(name, value) for name, value in pin_file.settings.items()}
    declared = {canonicalize_name(r.name) for r in declared_requirements(pyproject, extras)}
    for ins in instructions:
        if ins.keyword == "ARG" and set(assignments(ins.args).items()) <= pinned_settings:
            continue  # a base image ARG, checked against the pin file above
        if re.search(r"==\s*v?\d", ins.args):
            problems.append(f"{where}:{ins.line}: `==<version>` in a Dockerfile: versions belong in {PIN_FILE}")
        for key, (name, version) in pin_file.pins.items():
            written = rf"(?i)(?<![\w.-]){_name_pattern(name)}(?![\w-])\s*(?:[=<>~!]=?|@|\s)\s*v?\d+(?:\.\d+)+"
            if re.search(written, ins.args):
                problems.append(
                    f"{where}:{ins.line}: a version of {name} is written in the Dockerfile: versions belong in"
                    f" {pins_path}"
                )
            elif key in declared and re.search(rf"(?<![\w.+-]){re.escape(version)}(?![\w+-]|\.\d)", ins.args):
                problems.append(
                    f"{where}:{ins.line}: {name}'s pinned version {version} is written in the Dockerfile: versions"
                    f" belong in {pins_path}"
                )
    body = "\n".join(ins.args for ins in instructions)
    if flavour == "cpu" and "TORCH_INDEX_CPU" not in body:
        problems.append(f"{where}: torch's index is not read from {PIN_FILE} (#@ TORCH_INDEX_CPU=)")
    if "download.pytorch.org" in body:
        problems.append(f"{where}: torch's index URL is written in the Dockerfile: it belongs in {PIN_FILE}")
    return problems


def _install_problems(instructions: list, flavour: str, pyproject: dict, where: str) -> list[str]:
    """ftc and what it declares are installed from the build context and pyproject.toml, with the pin file as
    constraints, and checked against it once installed."""
    problems = []
    pins_path, extras = PIN_FILES[flavour], EXTRAS[flavour]
    copied = {path for i in instructions if i.keyword == "COPY" for path in shlex.split(i.args)[:-1]}
    if pins_path not in copied:
        problems.append(f"{where}: does not COPY {pins_path} (pip installs with it as constraints)")
    if PIN_FILE not in copied:
        problems.append(f"{where}: does not COPY {PIN_FILE} (its {TRACKER_SETTING} says what TRACKERS may name)")
    # ftc itself is built from the whole context (.dockerignore keeps out what is not its source), so a part
    # pyproject.toml's package-dir gains needs no line here
    if not any("." in sources for _, sources in context_sources(instructions)):
        problems.append(
            f"{where}: does not COPY the build context (`COPY . .`): `pip install .` builds ftc from the folders"
            " pyproject.toml's package-dir maps"
        )
    # what ftc declares is read from pyproject.toml by a RUN that then installs it with the pin file as constraints
    reads = [
        i.args
        for i in instructions
        if i.keyword == "RUN" and "pyproject.toml" in i.args and "optional-dependencies" in i.args
    ]
    listed = ", ".join(extras)
    if not reads:
        problems.append(
            f"{where}: no RUN reads [project] dependencies and the extras {listed} from pyproject.toml to install them"
        )
    for extra in extras if reads else ():
        if not any(re.search(rf"""["']{re.escape(extra)}["']""", args) for args in reads):
            problems.append(
                f"{where}: does not install the `{extra}` extra of pyproject.toml (this image installs [project]"
                f" dependencies and the extras {listed})"
            )
    problems += _tracker_problems(instructions, reads, where) if reads else []
    for ins in instructions:
        for command in re.split(r"&&|;|\|\|", ins.args) if ins.keyword == "RUN" else []:
            if re.search(r"\bpip\s+install\b", command) and f"-c {pins_path}" not in command:
                targets = [t for t in shlex.split(command.split("install", 1)[1]) if not t.startswith("-")]
                if not (targets == ["."] and "--no-deps" in command):  # ftc itself, after its pinned dependencies
                    problems.append(
                        f"{where}:{ins.line}: `{command.strip()}` installs without the pin file as constraints"
                        f" (-c {pins_path})"
                    )
    if not any(i.keyword == "RUN" and f"--installed {pins_path}" in i.args for i in instructions):
        problems.append(
            f"{where}: no RUN checks that everything installed is pinned"
            f" (python -m ftc.images.lint --installed {pins_path})"
        )
    version = pyproject["project"]["version"]
    for ins in instructions:
        if ins.keyword == "ARG" and assignments(ins.args).get("FTC_VERSION", version) != version:
            problems.append(
                f"{where}:{ins.line}: ARG FTC_VERSION defaults to {assignments(ins.args)['FTC_VERSION']!r},"
                f" pyproject.toml's version is {version!r}"
            )

    return problems


def _tracker_problems(instructions: list, reads: list[str], where: str) -> list[str]:
    """The tracker variant: the stage that lists what to install declares ``ARG TRACKERS`` before that RUN (empty by
    default: no tracker), and the RUN adds the extras it names, refusing any the pin file's TRACKER_EXTRAS does not
    list."""
    declared: list[str | None] = []
    for stage in dockerfile_stages(instructions)[1]:
        for ins in stage:
            if ins.keyword == "ARG" and "TRACKERS" in assignments(ins.args):
                declared.append(assignments(ins.args)["TRACKERS"])
            if ins.keyword == "RUN" and ins.args in reads:
                break  # what TRACKERS says here is what this RUN reads
        else:
            declared = []  # not the stage that installs
            continue
        break
    if not declared:
        return [f"{where}: no `ARG TRACKERS=` before the RUN that lists what to install (the tracker variant)"]
    problems = [
        f"{where}: ARG TRACKERS defaults to {value!r}: the default image carries no tracker (give them with"
        " --build-arg TRACKERS=...)"
        for value in declared
        if value
    ]
    if not any("TRACKERS" in args and f"#@ {TRACKER_SETTING}" in args for args in reads):
        problems.append(
            f"{where}: the RUN that lists what to install does not add the TRACKERS extras, checked against"
            f" {PIN_FILE}'s `#@ {TRACKER_SETTING}=`"
        )
    return problems


def _credential_problems(instructions: list, where: str) -> list[str]:
    """An ARG or ENV whose name looks like a credential (it would stay in the image's layers and history)."""
    problems = []
    for ins in instructions:
        if ins.keyword in ("ARG", "ENV"):
            for name in assignments(ins.args):
                if SECRET_NAME.search(name):
                    problems.append(
                        f"{where}:{ins.line}: {ins.keyword} {name} looks like a credential: build arguments and ENV"
                        " stay in the image's layers and history"
                    )
    return problems


def _final_stage_problems(final: list, flavour: str, where: str) -> list[str]:
    """The final stage copies only the environment from the builder, runs as a numeric non-root uid, runs
    ftc.runtime with the required ENV and LABELs, and installs a compiler only in the GPU image."""
    problems = []
    copies = [i for i in final if i.keyword == "COPY"]
    if not any(re.search(rf"--from=\S+\s+{re.escape(VENV)}/?\s+{re.escape(VENV)}/?$", i.args) for i in copies):
        problems.append(f"{where}: the final stage does not COPY --from=<builder> {VENV} {VENV}")
    for ins in copies:
        if "--from=" not in ins.args:
            problems.append(
                f"{where}:{ins.line}: the final stage copies from the build context ({ins.args}); it takes only"
                f" {VENV} from the builder"
            )
    users = [i for i in final if i.keyword == "USER"]
    if not users:
        problems.append(f"{where}: the final stage sets no USER: it would run as root")
    else:
        user = users[-1].args.split(":")[0].strip()
        if not user.isdigit():
            problems.append(
                f"{where}:{users[-1].line}: USER {users[-1].args}: use a numeric uid (runtimes check runAsNonRoot by"
                " number)"
            )
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
            env.update(assignments(ins.args))
        elif ins.keyword == "LABEL":
            labels.update(assignments(ins.args))
    for name, value in REQUIRED_ENV.items():
        if env.get(name) != value:
            problems.append(f"{where}: the final stage does not set ENV {name}={value}")
    for name in REQUIRED_LABELS:
        if name not in labels:
            problems.append(f"{where}: no LABEL {name}")
    runs = [ins for ins in final if ins.keyword == "RUN"]
    if flavour == "gpu":
        for tool in GPU_TOOLCHAIN:
            if not any(re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", ins.args) for ins in runs):
                problems.append(
                    f"{where}: the final stage does not install {tool}: Triton (FlexAttention, Liger) and"
                    " torch.compile compile with it at run time"
                )
    else:
        for ins in runs:
            if COMPILER.search(ins.args):
                problems.append(
                    f"{where}:{ins.line}: the final stage installs a compiler or build headers"
                    f" ({COMPILER.search(ins.args)[0]})"
                )
    return problems
