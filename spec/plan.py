"""The run plan: what the compiler hands the runtime, typed and frozen, read and verified once.

On disk a plan is canonical JSON (``plan.schema.json``); ``plan_id`` is the sha256 of that JSON without
``plan_id``. :func:`valid_plan` is the one check of a plan document, for the plan ``ftc compile`` writes and for
every plan read (:func:`read_plan`: a plan file, a checkpoint's plan.json): the schema (whose ``deepspeed`` section
is an allow-list), the job schema, every check the compiler makes on the spec's own fields, the output folder, the
launch command and ``plan_id``. A plan_id proves only that the plan is self-consistent (anyone can reseal an edited
plan), so a plan the compiler would never write is refused however it is sealed. Everything after that takes the
typed plan (or its fields), never the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftc.errors import _UNSET, PlanInvalid, Problem

from ._field_checks import spec_problems
from ._source import json_path
from .architectures import Architecture
from .canonical import digest_of
from .folders import system_folder
from .locations import staging_dir
from .model import JobSpec, Logger
from .reading import MiB, finite_json, read_bounded_text
from .schemas import validator

__all__ = [
    "PARENT_ROLES",
    "PLAN_VERSION",
    "Launch",
    "Placement",
    "Plan",
    "PlanFile",
    "PlanImage",
    "PlanInput",
    "STORE_SCHEMES",
    "TRACKERS",
    "deepspeed_problems",
    "plan_problems",
    "plan_text",
    "read_plan",
    "seal_plan",
    "valid_plan",
]

PLAN_VERSION = 2
#: a plan lists every file of every input: folders of many files make large plans, but not this large
PLAN_LIMIT = 256 * MiB
#: the roles of inputs that are weights a checkpoint derives from (the others are data and configuration)
PARENT_ROLES = ("base_model", "adapter")


@dataclass(frozen=True)
class PlanFile:
    """One file of a pinned folder: a local or downloaded file by sha256, a remote object by its store's pin."""

    path: str
    size: int
    sha256: str | None = None
    #: a remote object's identity in its store (S3: etag, version_id; GCS: generation, md5, crc32c; DVC: md5)
    pin: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class PlanInput:
    """One input, pinned: where it is (``uri``, relative to the plan for a local path) and its exact identity."""

    source: Literal["local", "hub", "s3", "gcs", "dvc"]
    uri: str
    #: False only for the published weights of a hub model_id (no revision is known at compile time)
    pinned: bool
    kind: Literal["file", "dir"] | None = None
    #: sha256 of a file, or of a folder's manifest
    digest: str | None = None
    size: int | None = None
    files: tuple[PlanFile, ...] | None = None
    #: the source's identity of the whole input (DVC: repo, rev, commit, md5, remote; S3/GCS objects: etag, ...)
    pin: Mapping[str, Any] | None = None
    #: examples in a data file, and lines to skip (skip_bad_examples)
    records: int | None = None
    bad_records: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The input as the plan file holds it."""
        return _plain(self)

    @property
    def file_sha256(self) -> dict[str, str]:
        """path -> sha256 of each listed file that has one."""
        return {f.path: f.sha256 for f in self.files or () if f.sha256}


@dataclass(frozen=True)
class PlanImage:
    """The image a container run uses: ``ref`` is what runs (by digest when ``pinned``)."""

    ref: str
    requested: str
    pinned: bool
    pin_kind: Literal["repo-digest", "image-id"] | None = None
    digest: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Launch:
    """How many processes, where, and the argv that starts one node's share of them."""

    nodes: int
    processes_per_node: int
    world_size: int
    #: {plan}, {node_rank}, {master_addr} and {master_port} are filled in at launch
    command: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """Where a plan runs when not beside what it was compiled with (``ftc reproduce``: a checkpoint's own plan, its
    local inputs where the checkpoint's record locates them, its output in a fresh folder). Not part of the plan: the
    plan's bytes, and so its plan_id and the plan.json each checkpoint carries, are unchanged.

    ``locations``: a location the plan names (an input's uri, the output folder) -> the absolute path it is at.
    ``stop_after_step``: end the run once the checkpoint of this step is written (None: run to the end).
    ``reproduction_of``: the checkpoint folder this run reproduces (its record names it as a parent).
    ``tracker``: None, the spec's logger (a plan the user compiled, placed by a backend: Ray); else the tracker the
    run feeds, named by the person running it (its address and credentials from the environment only), or ``off``.
    A plan from a checkpoint (``ftc reproduce``) always has one of those: its ``logger`` is not obeyed (it could
    name any server to send the environment's tracker credentials to)."""

    locations: Mapping[str, str] = field(default_factory=dict)
    stop_after_step: int | None = None
    reproduction_of: str | None = None
    tracker: str | None = None

    def __post_init__(self) -> None:
        if self.tracker is not None and self.tracker not in TRACKERS:
            raise ValueError(f"a placement's tracker is one of {', '.join(TRACKERS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "locations": dict(self.locations),
            "stop_after_step": self.stop_after_step,
            "reproduction_of": self.reproduction_of,
            "tracker": self.tracker,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Placement:
        locations = document.get("locations", {})
        stop = document.get("stop_after_step")
        origin = document.get("reproduction_of")
        tracker = document.get("tracker")
        if (
            not isinstance(locations, dict)
            or not all(isinstance(k, str) and isinstance(v, str) and os.path.isabs(v) for k, v in locations.items())
            or not (stop is None or (isinstance(stop, int) and not isinstance(stop, bool) and stop >= 0))
            or not (origin is None or (isinstance(origin, str) and os.path.isabs(origin)))
            or not (tracker is None or tracker in TRACKERS)
        ):
            raise ValueError("a placement maps locations to absolute paths, with an optional step, origin and tracker")
        return cls(locations, stop, origin, tracker)


#: what ``ftc reproduce --logger`` may name: off, or a tracker configured from the environment alone
TRACKERS = ("off", "mlflow", "wandb", "tensorboard")


@dataclass(frozen=True)
class Plan:
    """A compiled plan. ``folder`` (where the plan file is) is not part of the plan: relative locations in it are
    relative to that folder, and :meth:`locate` is the one place that resolves them."""

    plan_id: str
    ftc_version: str
    spec_digest: str
    #: the normalized spec, every default filled in (also what the inputs decided: context length, LoRA settings)
    spec: JobSpec
    mode: Literal["full", "lora-new", "lora-continue"]
    architecture: Architecture
    inputs: Mapping[str, PlanInput]
    image: PlanImage | None
    launch: Launch
    #: the DeepSpeed config for deepspeed.initialize (bf16 is decided at run time when precision is auto)
    deepspeed: Mapping[str, Any]
    output_dir: str
    folder: Path = field(default=Path("."), compare=False)
    placement: Placement | None = field(default=None, compare=False)

    def locate(self, location: str) -> Path:
        """A path the plan names (an input's uri, the output folder): where its placement puts it, if it has one;
        else as written when absolute or ``~``, else relative to the plan's folder."""
        if self.placement is not None and location in self.placement.locations:
            return Path(self.placement.locations[location])
        path = Path(os.path.expanduser(location))
        return path if path.is_absolute() else self.folder / path

    @property
    def output_store(self) -> str | None:
        """The object-store prefix the run publishes to (``s3://…/``, ``gs://…/``); None for a folder, or when the
        placement puts the output elsewhere (``ftc reproduce`` writes its rerun into a folder of its own)."""
        if self.placement is not None and self.output_dir in self.placement.locations:
            return None
        return self.output_dir.rstrip("/") + "/" if self.output_dir.startswith(STORE_SCHEMES) else None

    @property
    def output_path(self) -> Path:
        """Where the run writes: the output folder, or for a store prefix the local folder its checkpoints are
        staged in before each is uploaded ($FTC_CACHE_DIR/staging/<plan>; the same for a ``--resume``)."""
        if self.placement is not None and self.output_dir in self.placement.locations:
            return Path(self.placement.locations[self.output_dir])
        if self.output_store is not None:
            return staging_dir(self.plan_id)
        return self.locate(self.output_dir)

    @property
    def logger(self) -> Logger | None:
        """The tracker this run feeds: the spec's, or when the placement names one (``ftc reproduce``: a plan from
        a checkpoint) only that one, with no settings from the plan (address and credentials come from the
        environment), or none (``off``)."""
        if self.placement is None or self.placement.tracker is None:
            return self.spec.logger
        if self.placement.tracker == "off":
            return None
        return Logger(self.placement.tracker, {}, "fail")

    @property
    def zero_stage(self) -> int:
        return int(self.deepspeed.get("zero_optimization", {}).get("stage", 0))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], folder: Path = Path(".")) -> Plan:
        """The typed plan of a plan document that passed :func:`plan_problems`."""
        arch = document["architecture"]
        image = document["image"]
        return cls(
            plan_id=document["plan_id"],
            ftc_version=document["ftc_version"],
            spec_digest=document["spec_digest"],
            spec=JobSpec.from_dict(document["spec"]),
            mode=document["mode"],
            architecture=Architecture(arch["model_id"], arch["config"], arch["source"]),
            inputs={role: _input(item) for role, item in document["inputs"].items()},
            image=PlanImage(**image) if image is not None else None,
            launch=Launch(**{**document["launch"], "command": tuple(document["launch"]["command"])}),
            deepspeed=document["deepspeed"],
            output_dir=document["output"]["dir"],
            folder=folder,
        )

    def to_dict(self) -> dict[str, Any]:
        """The plan document (what the file holds): ``Plan.from_dict(p.to_dict()) == p``."""
        return {
            "plan_version": PLAN_VERSION,
            "plan_id": self.plan_id,
            "ftc_version": self.ftc_version,
            "spec_digest": self.spec_digest,
            "spec": self.spec.to_dict(),
            "mode": self.mode,
            "architecture": {
                "model_id": self.architecture.model_id,
                "source": self.architecture.source,
                "config": dict(self.architecture.config),
            },
            "inputs": {role: item.to_dict() for role, item in sorted(self.inputs.items())},
            "image": _plain(self.image) if self.image is not None else None,
            "launch": {**_plain(self.launch), "command": list(self.launch.command)},
            "deepspeed": dict(self.deepspeed),
            "output": {"dir": self.output_dir},
        }

    def text(self) -> str:
        """The plan file's text (deterministic)."""
        return plan_text(self.to_dict())


#: output_dir values that name an object-store prefix rather than a folder
STORE_SCHEMES = ("s3://", "gs://")


def _input(item: Mapping[str, Any]) -> PlanInput:
    files = item.get("files")
    return PlanInput(**{**item, "files": tuple(PlanFile(**f) for f in files) if files is not None else None})


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass as plan JSON: absent (None) fields left out, nested files as objects."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [_plain(v) for v in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def seal_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` with ``plan_id`` set to the sha256 of its canonical JSON (without plan_id)."""
    body = {k: v for k, v in plan.items() if k != "plan_id"}
    return {**body, "plan_id": digest_of(body)}


def plan_text(plan: dict[str, Any]) -> str:
    """The file form of a plan: sorted keys, two-space indent, trailing newline. Deterministic."""
    return json.dumps(plan, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def launch_command(nodes: int, per_node: int) -> list[str]:
    """argv that starts one node's share of the job ({placeholders} are filled in by ``ftc run``). The only command
    ftc writes, and the only one it runs: a plan naming another is refused."""
    entry = ["-m", "ftc.runtime", "{plan}"]
    if nodes == 1 and per_node == 1:
        return ["python", *entry]
    if nodes == 1:
        return ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={per_node}", *entry]
    return [
        "python",
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={per_node}",
        "--node-rank={node_rank}",
        "--master-addr={master_addr}",
        "--master-port={master_port}",
        *entry,
    ]


def read_plan(path: str | Path, *, older_spec: bool = False) -> Plan:
    """Load a plan and check it against plan.schema.json, the job schema (its spec section) and its plan_id.

    Raises :class:`PlanInvalid` listing every problem (nothing may run from a plan that fails here), and
    :class:`UsageError` when there is no such file. ``older_spec``: a plan an older ftc compiled (a checkpoint's,
    read to serve or describe it, not to run it) gets the defaults of the settings added since.
    """
    path = Path(path)
    text = read_bounded_text(
        path,
        limit=PLAN_LIMIT,
        what="plan",
        example="plan.json",
        missing_fix=f"make one with `ftc compile SPEC -o {path}`",
    )
    try:
        document = finite_json(text)
    except RecursionError:
        raise PlanInvalid(f"{path}: not a plan: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity
        raise PlanInvalid(f"{path}: not a JSON plan ({exc})") from None
    return valid_plan(document, path.resolve().parent, older_spec=older_spec, name=str(path))


def valid_plan(
    document: Any, folder: Path, *, older_spec: bool = False, name: str = "plan", remember_in: Path | None = None
) -> Plan:
    """The typed plan of ``document`` (to be, or read, in ``folder``) if it is one ``ftc compile`` could have
    written; else :class:`PlanInvalid` listing every problem (:func:`plan_problems`). The one check for the plan
    compile writes and every plan read."""
    problems = plan_problems(document, older_spec=older_spec, folder=folder, remember_in=remember_in)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise PlanInvalid(f"{name}: invalid plan:\n{listed}\n    fix: recompile the spec with `ftc compile`")
    if older_spec:
        from .schemas import apply_defaults

        document = {**document, "spec": apply_defaults(document["spec"])}
    return Plan.from_dict(document, folder=folder)


def _nul_strings(value: Any, at: str = "$") -> Iterator[str]:
    """Where ``value`` holds a string with a NUL character (no path, name or text in a plan may hold one)."""
    if isinstance(value, str):
        if "\x00" in value:
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_strings(key, f"{at} (a key)")
            yield from _nul_strings(item, f"{at}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_strings(item, f"{at}[{i}]")


def _field_problems(spec: dict[str, Any], *, older_spec: bool) -> list[str]:
    """The compiler's checks on the spec's own fields, run on the spec a plan carries (``raw`` is unknown there:
    a normalized spec holds every default, so checks that tell a written value from a default are the compiler's
    alone)."""
    from .schemas import apply_defaults

    def problem(at: tuple, message: str, hint: str = "", *, value: Any = _UNSET, **_: Any) -> Problem:
        return Problem(json_path(("spec", *at)), message, hint, value=value)

    try:
        typed = JobSpec.from_dict(apply_defaults(spec) if older_spec else spec)
    except (TypeError, ValueError, KeyError) as exc:
        return [f"$.spec: not a spec ftc can read ({type(exc).__name__})"]
    return [p.render() for p in spec_problems(typed, {}, problem)]


def _output_problems(output: str, folder: Path | None) -> list[str]:
    """The plan's output folder: never the root, the home folder or a system folder (``ftc.spec.folders``)."""
    if output.startswith(STORE_SCHEMES):
        return []
    path = os.path.expanduser(output)
    if not os.path.isabs(path):
        if folder is None:
            return []
        path = os.path.join(folder, path)
    why = system_folder(path)
    return [f"$.output.dir: {json.dumps(output)}: {why}: a run writes only into a folder of its own"] if why else []


def deepspeed_problems(config: Any) -> list[str]:
    """How a DeepSpeed config differs from what a plan may carry (plan.schema.json's allow-list: the keys ftc sets
    and ZeRO's tuning numbers; no monitor, profiler or file path), as readable lines."""
    from .schemas import plan_schema

    check = validator("plan.schema.json").evolve(schema=plan_schema()["$defs"]["deepspeed"])
    errors = sorted(check.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_where('$', e)}: {e.message}" for e in errors]


_DEEPSPEED_NOTE = " (a plan's DeepSpeed section holds only the settings ftc makes: no monitor, profiler or file path)"


def _where(prefix: str, error: Any) -> str:
    return prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def plan_problems(
    plan: Any, *, older_spec: bool = False, folder: Path | None = None, remember_in: Path | None = None
) -> list[str]:
    """Every way ``plan`` differs from what `ftc compile` writes, as readable lines (with ``older_spec``, settings
    added to the spec since the plan was compiled may be absent). ``folder``: where the plan is, from which its
    relative output folder is checked. ``remember_in`` (the compiler's, never a reader's: a marker says only that
    this ftc found these exact bytes valid before): a plan found valid against the schemas is remembered there, and
    a recompile skips the schema validation (and importing jsonschema); the other checks always run."""
    problems = []
    if isinstance(plan, dict) and "plan_version" in plan and plan["plan_version"] != PLAN_VERSION:
        found = json.dumps(plan["plan_version"])
        problems.append(f"$.plan_version: this ftc reads plan version {PLAN_VERSION}, the plan is version {found}")
    marker = None
    if remember_in is not None:
        from .schemas import _valid_marker, job_schema

        marker = _valid_marker([plan, job_schema()], "plan.schema.json", remember_in)
    against_schemas = marker is None or not marker.exists()
    if against_schemas:
        errors = sorted(validator("plan.schema.json").iter_errors(plan), key=lambda e: list(map(str, e.absolute_path)))
        problems += [
            f"{_where('$', e)}: {e.message}" + (_DEEPSPEED_NOTE if list(e.absolute_path)[:1] == ["deepspeed"] else "")
            for e in errors
            if list(e.absolute_path) != ["plan_version"]
        ]
    problems += [f"{at}: holds a NUL character" for at in _nul_strings(plan)]
    if problems:
        return problems
    launch = plan["launch"]
    ours = launch_command(launch["nodes"], launch["processes_per_node"])
    if launch["command"] != ours:
        problems.append(
            f"$.launch.command: {json.dumps(launch['command'])} is not the command ftc runs for "
            f"{launch['nodes']} node(s) x {launch['processes_per_node']} process(es) ({json.dumps(ours)})"
        )
    in_spec = []
    if against_schemas:
        in_spec += [
            f"{_where('$.spec', error)}: {error.message}"
            for error in validator("job.schema.json").iter_errors(plan["spec"])
        ]
    missing = [f.name for f in dataclasses.fields(JobSpec) if f.name not in plan["spec"]]
    if missing and not older_spec:  # a plan compiled before these settings existed: not normalized by this ftc
        in_spec.append(f"$.spec: no {', '.join(missing)} (the plan was compiled by an older ftc)")
    # the compiler's checks of the spec's own fields need a spec that is one
    problems += in_spec or _field_problems(plan["spec"], older_spec=older_spec)
    problems += _output_problems(plan["output"]["dir"], folder)
    expected = seal_plan(plan)["plan_id"]
    if plan["plan_id"] != expected:
        problems.append(
            f"$.plan_id: the plan was edited after compiling "
            f"(plan_id {plan['plan_id']} but the content hashes to {expected})"
        )
    if not problems and marker is not None and against_schemas:
        from .schemas import _touch

        _touch(marker)
    return problems
