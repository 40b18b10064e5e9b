"""``ftc run --backend docker``: run a plan inside the image it pins, through the container engine.

The host checks the plan and its inputs first (downloading remote ones into the cache), then starts one container
per node share. Inside, ``python -m ftc.runtime PLAN`` runs the same local backend as ``ftc run`` does on the host,
on the same paths: the plan's folder and every local input are mounted read-only at their host paths, the cache and
the output folder read-write. The container runs as the caller's uid:gid (outputs are the caller's), on the host
network with the host IPC namespace (DeepSpeed and NCCL need shared memory and the peers' addresses), and is removed
however the run ends: success, failure, Ctrl-C, SIGTERM or SIGHUP.

Store credentials stay on the host: the host checks every remote input against its store and downloads it into the
cache before the container starts, and the container reads those inputs from the cache (told so by the worker's
``--inputs-checked`` option), so it needs no credentials and gets none. The container's worker reports how it ended
in an outcome note (``outcome``) in a folder of the run's own mounted for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import EngineUnavailable, InputUnresolvable, UsageError
from ftc.images import IMAGE_ENV
from ftc.images.engine import connect, describe_error, engine_address, engine_errors, image_identity
from ftc.lineage.signing import signing_asked
from ftc.runtime.training.inputs import verify_inputs
from ftc.runtime.training.trackers import TRACKER_ENV
from ftc.spec.folders import SYSTEM_TREES, system_folder
from ftc.spec.plan import Plan, PlanImage
from ftc.stores.hashing import cache_dir
from ftc.stores.scratch import scratch
from ftc.stores.sources import SOURCES
from ftc.stores.sources.local import HOME_IN_CONTAINER

from .handoff import Handoff, Rendezvous
from .outcome import raise_unless_finished

__all__ = ["GpuRequest", "container_mounts", "container_name", "refuse_what_a_container_cannot_see", "run_in_container"]


@dataclass(frozen=True)
class GpuRequest:
    """``--gpus``: ``auto`` (all of them when the engine has an NVIDIA runtime, else none), ``all``, ``none`` or N."""

    value: str = "auto"

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        if text in ("auto", "all", "none") or (text.isdigit() and int(text) > 0):
            return cls(text)
        raise UsageError(f"--gpus {text}: give auto, all, none or a number of GPUs")

    def device_requests(self, engine_info: dict[str, Any]) -> list:
        import docker.types

        value = self.value
        if value == "auto":
            value = "all" if "nvidia" in (engine_info.get("Runtimes") or {}) else "none"
        if value == "none":
            return []
        return [docker.types.DeviceRequest(count=-1 if value == "all" else int(value), capabilities=[["gpu"]])]


def run_in_container(
    plan: Plan,
    plan_path: Path,
    *,
    resume: bool = False,
    rendezvous: Rendezvous | None = None,
    gpus: GpuRequest = GpuRequest(),
    mounts: tuple[str, ...] = (),
    log=print,
) -> None:
    """Run ``plan`` (read from ``plan_path``) in the image it pins; the container's outcome becomes this run's."""
    image = plan.image
    if image is None:
        raise UsageError(
            f"{plan_path}: the plan names no image; "
            "run it with --backend local, or add `image:` to the spec and recompile"
        )
    refuse_what_a_container_cannot_see(plan)
    plan_path = plan_path.resolve()
    paths = verify_inputs(plan)  # before anything starts: a changed input stops here
    client = connect("ftc run --backend docker")
    found = _image(client, image)
    output = plan.output_path
    output.mkdir(parents=True, exist_ok=True)  # by the caller, so the folder is the caller's

    with engine_errors("ftc run --backend docker"):
        info, version = client.info(), client.version()
    device_requests = gpus.device_requests(info)
    log(f"gpus: {_describe_gpus(gpus, device_requests)}")
    if signing_asked():  # the key never goes into a container (docs/security.md)
        log(
            "warning: signing is configured, but the docker backend does not sign: this run's checkpoints are"
            " unsigned (sign one afterwards with `ftc lineage sign CHECKPOINT`)"
        )
    engine = f"{version.get('Platform', {}).get('Name') or 'engine'} {version.get('Version', '')}".strip()
    rendezvous = rendezvous or Rendezvous()
    name = container_name(output, rendezvous.node_rank)
    # the worker's outcome note: in a folder of this run's own, mounted for it (not the output folder: the failure to
    # report may be that the output storage is full)
    with scratch("run") as folder:
        # remote inputs come from the cache (no store credentials in there); the output lock names the container
        handoff = Handoff(resume=resume, outcome=folder / "outcome.json", inputs_checked=True, container=name)
        options = {
            "image": found.id,
            "entrypoint": ["python", "-m", "ftc.runtime"],
            "command": [str(plan_path), *rendezvous.to_args(), *handoff.to_args()],
            "user": f"{os.getuid()}:{os.getgid()}",
            "environment": _environment(plan, image, found, engine),
            "mounts": [*container_mounts(plan_path, paths, output, mounts), _scratch_mount(folder)],
            "working_dir": str(plan_path.parent),
            "network_mode": "host",
            "ipc_mode": "host",
            "device_requests": device_requests,
            "labels": {
                "dev.ftc.plan-id": plan.plan_id,
                "dev.ftc.node-rank": str(rendezvous.node_rank),
                "dev.ftc.output-dir": str(output.resolve()),
            },
        }
        where = f"{image.requested} ({found.short_id}) on {engine_address()}"
        announce = lambda container: log(f"container {name} ({container.short_id}): {where}")  # noqa: E731
        code = _run_and_follow(client, name, output, options, gpus=gpus, announce=announce)
        # what the container's worker reported (its output was ours); a container that ended badly after the run's
        # last checkpoint and summary (an abort at exit) leaves the run complete, said as such
        raise_unless_finished(code, handoff.outcome, output, plan.plan_id, say=log)


def _environment(plan: Plan, image: PlanImage, found: Any, engine: str) -> dict[str, str]:
    """The container's environment: ftc's cache, offline hubs, a home, the image it runs in (for the lineage
    record) and the tracker's address and credentials."""
    ran = {"ref": image.ref, "requested": image.requested, "pinned": image.pinned, **image_identity(found)}
    ran["engine"] = engine
    if not image.pinned:
        ran["note"] = image.note  # the record says so too: this run cannot be reproduced from its plan
    environment = {
        "FTC_CACHE_DIR": str(cache_dir().resolve()),
        "HF_HUB_OFFLINE": "1",
        "HOME": "/tmp",  # the caller's uid has no home in the image (a `~` path in the plan was refused above)
        IMAGE_ENV: json.dumps(ran, sort_keys=True),
    }
    if plan.logger is not None:  # the tracker is fed from in there: its address and credentials go along
        environment.update({k: v for k, v in os.environ.items() if k in TRACKER_ENV[plan.logger.provider]})
    return environment


def _scratch_mount(folder: Path):
    from docker.types import Mount

    return Mount(str(folder), str(folder), type="bind", read_only=False)


def _run_and_follow(
    client, name: str, output: Path, options: dict[str, Any], *, gpus: GpuRequest, announce: Callable[[Any], None]
) -> int:
    """Create the container ``name`` (``announce`` it), start it, copy its output to ours until it ends, and return
    its exit code; it is removed however that ends (success, failure, Ctrl-C, SIGTERM, SIGHUP)."""
    container = None
    try:
        _clear_the_way(client, name, output)
        with engine_errors("ftc run --backend docker"):
            container = _create(client, name, output, **options)
            announce(container)
            # attached before it starts: attaching to a container that already exited can wait forever
            output_stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        try:
            container.start()
        except Exception as exc:
            raise _start_error(exc, gpus) from None
        with engine_errors("ftc run --backend docker (following the container)"):
            for out, err in output_stream:  # the container's stdout and stderr to ours, each to its own
                for data, stream in ((out, sys.stdout), (err, sys.stderr)):
                    if data:
                        stream.buffer.write(data)
                        stream.flush()
            return container.wait()["StatusCode"]
    finally:
        if container is not None:  # never leave it behind
            try:
                container.remove(force=True)
            except Exception as exc:
                print(
                    f"warning: could not remove container {container.short_id} ({describe_error(exc)}); "
                    f"remove it with `docker rm -f {container.id}`",
                    file=sys.stderr,
                )


def container_name(output: Path, node_rank: int) -> str:
    """The one name a container writing node ``node_rank``'s share into ``output`` has: the engine refuses a second
    container of that name, so two container runs into one folder cannot both start."""
    return f"ftc-{hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:12]}-node{node_rank}"


def _busy(name: str, output: Path, short_id: str) -> UsageError:
    return UsageError(
        f"{output} is being written by container {name} ({short_id}), which no `ftc run` may be following any more "
        "(one that was killed leaves its container training)\n"
        f"    fix: stop it with `docker rm -f {name}`, then continue with `ftc run PLAN --resume`; "
        "or wait for it to end"
    )


def _clear_the_way(client, name: str, output: Path) -> None:
    """Refuse while a container of ``name`` is alive; remove one that has ended (left by a killed ``ftc run``)."""
    import docker.errors

    with engine_errors("ftc run --backend docker (looking for an earlier container)"):
        try:
            earlier = client.containers.get(name)
        except docker.errors.NotFound:
            return
        if earlier.status in ("created", "running", "restarting", "paused"):
            raise _busy(name, output, earlier.short_id)
        earlier.remove(force=True)


def _create(client, name: str, output: Path, **options):
    """A new container of ``name``; a clear refusal when another run created one of that name first."""
    import docker.errors

    try:
        return client.containers.create(name=name, **options)
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # Conflict: the name is taken, by a run that started since _clear_the_way
            raise _busy(name, output, "just started") from None
        raise


def refuse_what_a_container_cannot_see(plan: Plan) -> None:
    for role, item in plan.inputs.items():  # the input's kind knows what an offline container cannot read
        problem = SOURCES[item.source].container_problem(role, item)
        if problem is not None:
            raise UsageError(problem)
    if plan.output_dir.startswith("~"):
        raise UsageError(f"output_dir {plan.output_dir}: {HOME_IN_CONTAINER}")


def _describe_gpus(gpus: GpuRequest, requests: list) -> str:
    if requests:
        count = requests[0]["Count"]
        return f"{'all' if count == -1 else count} (--gpus {gpus.value})"
    if gpus.value == "auto" and any(Path("/dev").glob("nvidia[0-9]*")):
        return (
            "none: this machine has NVIDIA devices but the engine has no NVIDIA runtime; "
            "install the NVIDIA Container Toolkit, or give --gpus all"
        )
    return f"none (--gpus {gpus.value}{': the engine has no NVIDIA runtime' if gpus.value == 'auto' else ''})"


def _image(client, image: PlanImage):
    """The engine's image for the plan's pin, pulled by digest when it is not here; never a different image."""
    import docker.errors

    try:
        return client.images.get(image.ref)
    except docker.errors.ImageNotFound:
        pass
    if not image.pinned or image.pin_kind == "image-id":
        if image.pinned:
            fix = "run where it was built, or push it to a registry and recompile (the plan then pins its digest)"
        else:
            fix = f"build or `docker pull {image.ref}` there, or run with --backend local"
        raise InputUnresolvable(
            f"image {image.requested}: the engine at {engine_address()} does not have {image.ref}; {fix}"
        )
    repository, digest = image.ref.split("@", 1)
    try:
        return client.images.pull(repository, tag=digest)
    except Exception as exc:  # not in the registry, denied, registry unreachable
        raise InputUnresolvable(
            f"image {image.ref}: not in the engine, and pulling it by digest failed: {describe_error(exc)}"
        ) from None


def container_mounts(plan_path: Path, paths: dict[str, Path | str], output: Path, extra: tuple[str, ...]) -> list:
    from docker.types import Mount

    read_only = {plan_path.parent.resolve()}
    for value in paths.values():
        if isinstance(value, Path):
            read_only.add(value.resolve())
    planned = set(read_only)  # what the plan names (--mount is the caller's own choice)
    for spec in extra:
        source = Path(spec).expanduser()
        if not source.exists():
            raise UsageError(f"--mount {spec}: no such file or folder")
        read_only.add(source.resolve())
    writable = {output.resolve(), cache_dir().resolve()}
    _refuse_system_binds(planned, writable)
    for folder in writable:
        folder.mkdir(parents=True, exist_ok=True)
    # a path inside another mounted path comes with it, unless it must be writable inside a read-only parent
    keep = {p for p in read_only if not any(p != q and p.is_relative_to(q) for q in read_only)}
    out = [Mount(str(p), str(p), type="bind", read_only=True) for p in sorted(keep) if p not in writable]
    out += [Mount(str(p), str(p), type="bind", read_only=False) for p in sorted(writable)]
    return out


def _refuse_system_binds(read_only: set[Path], writable: set[Path]) -> None:
    """Whatever a plan, a spec or the environment says, the container never gets a system folder, the root or the
    home folder to write into (``ftc.spec.folders``), nor a host folder the plan names read-only over the image's
    own system (``/``, ``/usr``, ``/etc``...)."""
    for path in sorted(writable):
        why = system_folder(path)
        if why is not None:
            raise UsageError(
                f"{path}: {why}; a container run binds its output and ftc's cache read-write, never such a folder"
                "\n    fix: give output_dir (and FTC_CACHE_DIR) a folder of their own, e.g. runs/NAME"
            )
    for path in sorted(read_only):
        text = str(path)
        if text == "/" or any(text == tree or text.startswith(tree + "/") for tree in SYSTEM_TREES):
            raise UsageError(
                f"{path}: a system folder; bound into the container it would cover the image's own"
                "\n    fix: copy the input (or the plan) into a folder of its own and recompile"
            )


def _start_error(exc: Exception, gpus: GpuRequest) -> Exception:
    text = describe_error(exc)
    if "capabilities: [[gpu]]" in text or "nvidia" in text.lower():
        return EngineUnavailable(
            f"--gpus {gpus.value}: the engine at {engine_address()} cannot give containers GPUs ({text}); install the "
            "NVIDIA Container Toolkit there, or run on CPU with --gpus none"
        )
    return EngineUnavailable(f"the container did not start: {text}")
