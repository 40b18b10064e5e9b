"""The container engine (Docker API: dockerd, or podman's Docker-compatible service), through the Docker SDK.

Which engine: ``DOCKER_HOST`` (``unix:///path/docker.sock``, ``tcp://host:2375``) or the default socket, as the
``docker`` CLI uses it. Everything here turns the SDK's exceptions into ftc errors that say what to do.

An image is pinned as one of:
    repo-digest   ``repo@sha256:<manifest digest>``: what a registry serves; any machine can pull it by digest
    image-id      ``sha256:<config digest>``: a locally built image never pushed; runs only where it was built
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ftc.errors import EngineUnavailable, InputUnresolvable

__all__ = [
    "connect",
    "describe_error",
    "engine_address",
    "engine_errors",
    "pin_image",
    "image_identity",
    "same_repository",
    "split_reference",
]

_TIMEOUT_S = 10
_REGISTRY_TIMEOUT_S = 30


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(purpose: str):
    """A Docker SDK client that has answered a ping; :class:`EngineUnavailable` otherwise."""
    try:
        import docker
    except ImportError:
        raise EngineUnavailable(
            f"{purpose} needs the Docker SDK for Python; install it with `pip install 'ftc[docker]'`"
        ) from None
    try:
        client = docker.from_env(timeout=_TIMEOUT_S)  # DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' errors or OSError, depending on how it fails
        raise EngineUnavailable(
            f"{purpose}: no container engine answers at {engine_address()} ({describe_error(exc)}); start dockerd "
            "(or `podman system service`) or point DOCKER_HOST at one"
        ) from None
    return client


@contextlib.contextmanager
def engine_errors(purpose: str) -> Iterator[None]:
    """Turn whatever the SDK raises while talking to the engine (API errors, lost connections, time-outs) into
    :class:`EngineUnavailable` naming ``purpose``."""
    try:
        yield
    except EngineUnavailable:
        raise
    except Exception as exc:
        import docker.errors
        import requests

        if isinstance(exc, (docker.errors.DockerException, requests.RequestException, OSError)):
            raise EngineUnavailable(
                f"{purpose}: the engine at {engine_address()} failed: {describe_error(exc)}"
            ) from None
        raise


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference:
    ``host:5000/a/b:tag@sha256:..`` -> (host:5000/a/b, tag, sha256:..)."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    name, _, last = ref.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
    return (f"{name}/{last}" if name else last), tag, digest


def pin_image(ref: str, client=None) -> dict[str, Any]:
    """The plan's ``image`` section for ``ref``: pinned by repo digest when the engine (or the registry through it)
    knows one, else by local image ID. Raises when the image is nowhere to be found."""
    repository, tag, digest = split_reference(ref)
    if digest:  # already pinned: nothing to ask
        return {
            "ref": f"{repository}@{digest}",
            "requested": ref,
            "pinned": True,
            "pin_kind": "repo-digest",
            "digest": digest,
        }
    client = client or connect(f"pinning image {ref}")
    import docker.errors

    with engine_errors(f"image {ref}"):
        try:
            image = client.images.get(ref)
        except docker.errors.ImageNotFound:
            image = None
    if image is not None:
        for found in image.attrs.get("RepoDigests") or []:
            repo, _, _ = split_reference(found)
            if same_repository(repo, repository):
                pinned = found.split("@", 1)[1]
                return {
                    "ref": f"{repository}@{pinned}",
                    "requested": ref,
                    "pinned": True,
                    "pin_kind": "repo-digest",
                    "digest": pinned,
                }
        return {"ref": image.id, "requested": ref, "pinned": True, "pin_kind": "image-id", "digest": image.id}
    try:  # not here: ask its registry (through the engine, with the engine's credentials) without pulling
        client.api.timeout = _REGISTRY_TIMEOUT_S
        data = client.images.get_registry_data(ref)
    except Exception as exc:  # not found, denied, registry unreachable or slow: the image cannot be pinned
        raise InputUnresolvable(
            f"image {ref}: not in the engine at {engine_address()}, and its registry did not give a digest "
            f"({describe_error(exc)}); build or pull it first (`ftc image build`, `docker pull {ref}`)"
        ) from None
    return {
        "ref": f"{repository}@{data.id}",
        "requested": ref,
        "pinned": True,
        "pin_kind": "repo-digest",
        "digest": data.id,
    }


def image_identity(image) -> dict[str, Any]:
    """What a lineage record says about the image a container ran: its ID and the registry digests it has."""
    return {"id": image.id, "repo_digests": sorted(image.attrs.get("RepoDigests") or [])}


def same_repository(a: str, b: str) -> bool:
    """Whether two repository names are one (``ubuntu`` is ``docker.io/library/ubuntu``, as podman spells it)."""
    return _canonical_repository(a) == _canonical_repository(b)


def _canonical_repository(name: str) -> str:
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":  # no registry host: Docker Hub
        return f"docker.io/{name}"
    return name


def describe_error(exc: BaseException) -> str:
    """The first line of what the engine (or the connection to it) said."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
