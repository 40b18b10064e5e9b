"""The run plan: what the compiler hands the runtime, typed and frozen, read and verified once.

On disk a plan is canonical JSON (``plan.schema.json``, its form in ``plan_format``); ``plan_id`` is the sha256 of
that JSON without ``plan_id``. :func:`valid_plan` is the one check of a plan document (``plan_checks`` lists its
problems), for the plan ``ftc compile`` writes and for every plan read (:func:`read_plan`: a plan file, a
checkpoint's plan.json). Everything after that takes the typed plan (or its fields), never the JSON. This module
holds the typed plan and those two ways in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftc.errors import PlanInvalid

from .architectures import Architecture
from .locations import staging_dir
from .model import JobSpec, Logger
from .plan_checks import plan_problems
from .plan_format import PLAN_VERSION, STORE_SCHEMES, plan_text
from .reading import MiB, finite_json, read_bounded_text

__all__ = [
    "PARENT_ROLES",
    "PLAN_LIMIT",
    "Launch",
    "Placement",
    "Plan",
    "PlanFile",
    "PlanImage",
    "PlanInput",
    "TRACKERS",
    "read_plan",
    "valid_plan",
]

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
    ``reproduction_given``: that folder as the person running it named it (``ftc reproduce runs/a/...``), which the
    rerun's record keeps as given (``source.given``), as a spec's paths are kept; None: ``reproduction_of``.
    ``tracker``: None, the spec's logger (a plan the user compiled, placed by a backend: Ray); else the tracker the
    run feeds, named by the person running it (its address and credentials from the environment only), or ``off``.
    A plan from a checkpoint (``ftc reproduce``) always has one of those: its ``logger`` is not obeyed (it could
    name any server to send the environment's tracker credentials to)."""

    locations: Mapping[str, str] = field(default_factory=dict)
    stop_after_step: int | None = None
    reproduction_of: str | None = None
    tracker: str | None = None
    reproduction_given: str | None = None

    def __post_init__(self) -> None:
        if self.tracker is not None and self.tracker not in TRACKERS:
            raise ValueError(f"a placement's tracker is one of {', '.join(TRACKERS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "locations": dict(self.locations),
            "stop_after_step": self.stop_after_step,
            "reproduction_of": self.reproduction_of,
            "tracker": self.tracker,
            "reproduction_given": self.reproduction_given,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Placement:
        locations = document.get("locations", {})
        stop = document.get("stop_after_step")
        origin = document.get("reproduction_of")
        tracker = document.get("tracker")
        given = document.get("reproduction_given")
        if (
            not isinstance(locations, dict)
            or not all(isinstance(k, str) and isinstance(v, str) and os.path.isabs(v) for k, v in locations.items())
            or not (stop is None or (isinstance(stop, int) and not isinstance(stop, bool) and stop >= 0))
            or not (origin is None or (isinstance(origin, str) and os.path.isabs(origin)))
            or not (tracker is None or tracker in TRACKERS)
            or not (given is None or (isinstance(given, str) and origin is not None))
        ):
            raise ValueError("a placement maps locations to absolute paths, with an optional step, origin and tracker")
        return cls(locations, stop, origin, tracker, given)


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
    #: the llmforge keys the spec gave that are not ftc's: key -> {"given": value, "as": ftc setting or None}
    llmforge: Mapping[str, Any] = field(default_factory=dict)
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
            llmforge=document.get("llmforge", {}),
            folder=folder,
        )

    def to_dict(self) -> dict[str, Any]:
        """The plan document (what the file holds): ``Plan.from_dict(p.to_dict()) == p``."""
        llmforge = {"llmforge": dict(self.llmforge)} if self.llmforge else {}  # absent when none: plan_id unchanged
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
            **llmforge,
        }

    def text(self) -> str:
        """The plan file's text (deterministic)."""
        return plan_text(self.to_dict())


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
