"""``ftc run --backend docker``: run a plan inside the image it pins, through the container engine.

The host checks the plan and its inputs first (downloading remote ones into the cache), then starts one container
per node share. Inside, ``python -m ftc.runtime PLAN`` runs the same local backend as ``ftc run`` does on the host,
on the same paths: the plan's folder and every local input are mounted read-only at their host paths, the cache and
the output folder read-write. The container runs as the caller's uid:gid (outputs are the caller's), on the host
network with the host IPC namespace (DeepSpeed and NCCL need shared memory and the peers' addresses), and is removed
however the run ends: success, failure, Ctrl-C or SIGTERM.

Credentials are never in the plan: the store variables present in the caller's environment are handed to the
container when it starts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc._engine import connect, engine_address, image_identity
from ftc._hashing import cache_dir
from ftc.errors import EngineUnavailable, InputUnresolvable, UsageError
from ftc.lineage.record import IMAGE_ENV

from ._inputs import verify_inputs
from ._launch import FAILURE_NOTE, _output_dir, raise_failure

__all__ = ["CREDENTIAL_VARIABLES", "GpuRequest", "run_in_container"]

#: store settings and credentials handed from the caller's environment to the container (never written anywhere)
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CA_BUNDLE",
    "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "HF_TOKEN",
)


@dataclass(frozen=True)
class GpuRequest:
    """``--gpus``: ``auto`` (all of them when the engine has an NVIDIA runtime, else none), ``all``, ``none`` or N."""

    value: str = "auto"

    @classmethod
    def parse(cls, text: str) -> "GpuRequest":
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
    plan: dict[str, Any],
    plan_path: Path,
    *,
    resume: bool = False,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    gpus: GpuRequest = GpuRequest(),
    mounts: tuple[str, ...] = (),
    log=print,
) -> None:
    image = plan["image"]
    if image is None:
        raise UsageError(f"{plan_path}: the plan names no image; run it with --backend local, or add `image:` to the spec and recompile")
    plan_path = plan_path.resolve()
    paths = verify_inputs(plan, plan_path.parent)  # before anything starts: a changed input stops here
    client = connect("ftc run --backend docker")
    found = _image(client, image)
    output = _output_dir(plan, plan_path.parent)
    output.mkdir(parents=True, exist_ok=True)  # by the caller, so the folder is the caller's
    note = output / FAILURE_NOTE
    note.unlink(missing_ok=True)

    command = [str(plan_path), "--node-rank", str(node_rank), "--master-addr", master_addr, "--master-port", str(master_port)]
    if resume:
        command.append("--resume")
    ran = {"ref": image["ref"], "requested": image["requested"], "pinned": image["pinned"], **image_identity(found), "engine": _engine_name(client)}
    if not image["pinned"]:
        ran["note"] = image["note"]  # the record says so too: this run cannot be reproduced from its plan
    environment = {
        "FTC_CACHE_DIR": str(cache_dir().resolve()),
        "HF_HUB_OFFLINE": "1",
        "HOME": "/tmp",  # the caller's uid has no home in the image
        IMAGE_ENV: json.dumps(ran, sort_keys=True),
        **{name: os.environ[name] for name in CREDENTIAL_VARIABLES if name in os.environ},
    }
    binds = _mounts(plan_path, paths, output, mounts)
    container = None
    try:
        container = client.containers.create(
            found.id,
            command=command,
            user=f"{os.getuid()}:{os.getgid()}",
            environment=environment,
            mounts=binds,
            working_dir=str(plan_path.parent),
            network_mode="host",
            ipc_mode="host",
            device_requests=gpus.device_requests(client.info()),
            labels={"dev.ftc.plan-id": plan["plan_id"], "dev.ftc.node-rank": str(node_rank)},
        )
        log(f"container {container.short_id}: {image['requested']} ({found.short_id}) on {engine_address()}")
        try:
            container.start()
        except Exception as exc:
            raise _start_error(exc, gpus) from None
        # the container's stdout and stderr to ours, each to its own (errors stay on stderr)
        for out, err in container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True):
            for data, stream in ((out, sys.stdout), (err, sys.stderr)):
                if data:
                    stream.buffer.write(data)
                    stream.flush()
        code = container.wait()["StatusCode"]
    finally:
        if container is not None:  # success, failure, Ctrl-C, SIGTERM: never leave it behind
            try:
                container.remove(force=True)
            except Exception:  # already gone, or the engine went away: nothing more to do
                pass
    raise_failure(code, note)


def _image(client, image: dict[str, Any]):
    """The engine's image for the plan's pin, pulled by digest when it is not here; never a different image."""
    import docker.errors

    try:
        return client.images.get(image["ref"])
    except docker.errors.ImageNotFound:
        pass
    if not image["pinned"] or image["pin_kind"] == "image-id":
        why = "its local image ID" if image["pinned"] else "an unpinned tag"
        raise InputUnresolvable(
            f"image {image['requested']}: the engine at {engine_address()} does not have {image['ref']} (the plan names "
            f"it by {why}, which no registry serves); run where it was built, or push it and recompile"
        )
    repository, digest = image["ref"].split("@", 1)
    try:
        return client.images.pull(repository, tag=digest)
    except docker.errors.APIError as exc:
        raise InputUnresolvable(f"image {image['ref']}: not in the engine, and pulling it by digest failed: {_text(exc)}") from None


def _mounts(plan_path: Path, paths: dict[str, Path | str], output: Path, extra: tuple[str, ...]) -> list:
    from docker.types import Mount

    read_only = {plan_path.parent.resolve()}
    for value in paths.values():
        if isinstance(value, Path):
            read_only.add(value.resolve())
    for spec in extra:
        source = Path(spec).expanduser()
        if not source.exists():
            raise UsageError(f"--mount {spec}: no such file or folder")
        read_only.add(source.resolve())
    writable = {output.resolve(), cache_dir().resolve()}
    for folder in writable:
        folder.mkdir(parents=True, exist_ok=True)
    # a path inside another mounted path comes with it, unless it must be writable inside a read-only parent
    keep = {p for p in read_only if not any(p != q and p.is_relative_to(q) for q in read_only)}
    out = [Mount(str(p), str(p), type="bind", read_only=True) for p in sorted(keep) if p not in writable]
    out += [Mount(str(p), str(p), type="bind", read_only=False) for p in sorted(writable)]
    return out


def _engine_name(client) -> str:
    version = client.version()
    return f"{version.get('Platform', {}).get('Name') or 'engine'} {version.get('Version', '')}".strip()


def _start_error(exc: Exception, gpus: GpuRequest) -> Exception:
    text = _text(exc)
    if "capabilities: [[gpu]]" in text or "nvidia" in text.lower():
        return EngineUnavailable(
            f"--gpus {gpus.value}: the engine at {engine_address()} cannot give containers GPUs ({text}); install the "
            "NVIDIA Container Toolkit there, or run on CPU with --gpus none"
        )
    return EngineUnavailable(f"the container did not start: {text}")


def _text(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0][:300]
