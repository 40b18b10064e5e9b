"""``ftc image build``: build the runtime images (images/Dockerfile.<flavor>) from a checkout, through the engine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ftc
from ftc.errors import ImageBuildFailed, UsageError

from .engine import connect, describe_error, engine_address, engine_errors, same_repository, split_reference

__all__ = ["FLAVORS", "Built", "build_image", "default_tag", "source_checkout"]

FLAVORS = ("cpu", "gpu")
# a URL with a user and password in it: build arguments stay in the image's history
URL_CREDENTIAL = re.compile(r"://[^/@\s]+:[^/@\s]*@")


@dataclass(frozen=True)
class Built:
    """An image ``ftc image build`` made: its tag, image ID, size and how long the build took, and the registry
    digests the engine has for it (none for a fresh build; the same image pushed or pulled before has them)."""

    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    repo_digests: tuple[str, ...] = ()

    def pinned_by(self) -> str:
        """How ``ftc compile`` pins a spec's ``image:`` of this tag, as :func:`~ftc.images.engine.pin_image` does:
        by the registry digest the engine has for the tag's repository, else by the local image ID."""
        repository, _, _ = split_reference(self.tag)
        for found in self.repo_digests:
            if same_repository(split_reference(found)[0], repository):
                return f"by its registry digest ({found})"
        return (
            "by its image ID, which only this engine has: push it to a registry and name the pushed tag to pin it"
            " by registry digest, for a plan that runs anywhere"
        )


def default_tag(flavor: str) -> str:
    return f"ftc-runtime:{ftc.__version__}-{flavor}"


def source_checkout(given: Path | None = None) -> Path:
    """The folder to build from: ``given``, else the checkout this ftc runs from.

    It must hold images/ and pyproject.toml."""
    root = given if given is not None else Path(__file__).resolve().parents[1]  # images/build.py in a checkout
    if not (root / "images").is_dir() or not (root / "pyproject.toml").is_file():
        where = (
            f"{given}: not a checkout of ftc"
            if given is not None
            else f"this ftc ({Path(ftc.__file__).parent}) is not installed from a checkout"
        )
        raise UsageError(
            f"{where} (no images/ and pyproject.toml there); "
            "the images are built from ftc's source: give a checkout with --context"
        )
    return root


def build_image(
    flavor: str,
    *,
    tag: str | None = None,
    context: Path | None = None,
    build_args: dict[str, str] | None = None,
    network: str | None = None,
    log: Callable[[str], None] = print,
) -> Built:
    """Build images/Dockerfile.<flavor> from the checkout and tag it. ``build_args`` (BASE_IMAGE, PIP_INDEX_URL, ...)
    go to the Dockerfile; ``network`` is the RUN steps' network mode (``host`` where the engine has no bridge). The
    build's output streams to ``log``."""
    if flavor not in FLAVORS:
        raise UsageError(f"image flavour {flavor!r}: choose one of {', '.join(FLAVORS)}")
    for name, value in (build_args or {}).items():
        if URL_CREDENTIAL.search(value):
            raise UsageError(
                f"--build-arg {name}: the URL carries a user and password, and build arguments stay in the image's"
                " history; use an index that needs none (a mirror on this network) and pass credentials to pip"
                " another way"
            )
    root = source_checkout(context)
    dockerfile = root / "images" / f"Dockerfile.{flavor}"
    if not dockerfile.is_file():
        raise UsageError(f"{dockerfile}: no such Dockerfile")
    tag = tag or default_tag(flavor)
    build_args = {**_labels(root), **(build_args or {})}
    client = connect(f"building {tag}")
    log(f"building {tag} from {dockerfile} on {engine_address()}")
    image_id = None
    last: list[str] = []
    started = time.monotonic()
    try:
        for event in client.api.build(
            path=str(root),
            dockerfile=f"images/Dockerfile.{flavor}",
            tag=tag,
            buildargs=build_args,
            network_mode=network,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in event:
                text = event["stream"].rstrip("\n")
                if text:
                    last = (last + [text])[-5:]
                    log(text)
            if "aux" in event and "ID" in event["aux"]:
                image_id = event["aux"]["ID"]
            if "error" in event:
                raise ImageBuildFailed(
                    f"building {tag} failed: {event['error'].strip()}"
                    + ("\n    last output:\n      " + "\n      ".join(last) if last else "")
                )
    except ImageBuildFailed:
        raise
    except Exception as exc:  # the engine refused the build request itself (bad context, engine error)
        raise ImageBuildFailed(f"building {tag} failed: {describe_error(exc)}") from None
    with engine_errors(f"building {tag}"):
        image = client.images.get(image_id or tag)
    digests = tuple(sorted(image.attrs.get("RepoDigests") or []))
    return Built(tag, image.id, int(image.attrs.get("Size") or 0), time.monotonic() - started, digests)


def _labels(root: Path) -> dict[str, str]:
    """The Dockerfiles' label arguments: the checkout's version, and its commit (``-dirty`` with uncommitted
    changes) when it is a git repository."""
    import re
    import subprocess

    version = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
    args = {"FTC_VERSION": version.group(1)} if version else {}
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return args
    if done.returncode == 0:
        args["FTC_REVISION"] = done.stdout.strip()
    return args
