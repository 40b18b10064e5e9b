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

__all__ = ["FLAVORS", "Built", "build_image", "default_tag", "image_trackers", "source_checkout"]

FLAVORS = ("cpu", "gpu")
# a URL with a user and password in it: build arguments stay in the image's history
URL_CREDENTIAL = re.compile(r"://[^/@\s]+:[^/@\s]*@")


@dataclass(frozen=True)
class Built:
    """An image ``ftc image build`` made: its tag, image ID, size and how long the build took, the registry digests
    the engine has for it (none for a fresh build; the same image pushed or pulled before has them), and the tracker
    extras it carries."""

    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    repo_digests: tuple[str, ...] = ()
    trackers: tuple[str, ...] = ()  # the tracker extras installed (the tracker variant)

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


def default_tag(flavor: str, trackers: tuple[str, ...] = ()) -> str:
    """``ftc-runtime:<version>-<flavor>``, with the tracker variant's extras before the flavour, which stays last
    (``ftc-runtime:0.1.0-mlflow-wandb-cpu``: ``--emit k8s`` reads a ``-cpu`` tag as a CPU image)."""
    return f"ftc-runtime:{'-'.join((ftc.__version__, *trackers, flavor))}"


def image_trackers(root: Path, given: tuple[str, ...]) -> tuple[str, ...]:
    """The tracker extras to install (``given``, in the pin file's order, each once), checked against the checkout's
    ``#@ TRACKER_EXTRAS=`` (images/versions.txt): a name it does not list is refused before the engine is asked."""
    from .lint import PIN_FILE, TRACKER_SETTING, parse_pin_file, tracker_extras

    if not given:
        return ()  # the plain image: its Dockerfile needs no tracker list
    try:
        known = tracker_extras(parse_pin_file((root / PIN_FILE).read_text()))
    except OSError as exc:
        raise UsageError(
            f"--tracker: {root / PIN_FILE} cannot be read ({exc.strerror}): it lists the tracker extras"
        ) from None
    unknown = [name for name in given if name not in known]
    if unknown:
        raise UsageError(
            f"--tracker {', '.join(unknown)}: not a tracker extra of this checkout ({PIN_FILE}'s {TRACKER_SETTING}:"
            f" {', '.join(known) or 'none'})"
        )
    return tuple(name for name in known if name in given)


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
    trackers: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
) -> Built:
    """Build images/Dockerfile.<flavor> from the checkout and tag it. ``build_args`` (BASE_IMAGE, PIP_INDEX_URL, ...)
    go to the Dockerfile; ``network`` is the RUN steps' network mode (``host`` where the engine has no bridge);
    ``trackers`` (mlflow, wandb, tensorboard) makes the tracker variant, with those extras installed at their pins
    (the TRACKERS build argument). The build's output streams to ``log``."""
    if flavor not in FLAVORS:
        raise UsageError(f"image flavour {flavor!r}: choose one of {', '.join(FLAVORS)}")
    for name, value in (build_args or {}).items():
        if URL_CREDENTIAL.search(value):
            raise UsageError(
                f"--build-arg {name}: the URL carries a user and password, and build arguments stay in the image's"
                " history; use an index that needs none (a mirror on this network) and pass credentials to pip"
                " another way"
            )
    if trackers and "TRACKERS" in (build_args or {}):
        raise UsageError("--tracker and --build-arg TRACKERS=...: give the trackers one way (--tracker NAME)")
    root = source_checkout(context)
    dockerfile = root / "images" / f"Dockerfile.{flavor}"
    if not dockerfile.is_file():
        raise UsageError(f"{dockerfile}: no such Dockerfile")
    given = tuple((build_args or {}).get("TRACKERS", "").replace(",", " ").split()) or tuple(trackers)
    trackers = image_trackers(root, given)
    tag = tag or default_tag(flavor, trackers)
    build_args = {**_labels(root), **(build_args or {}), **({"TRACKERS": " ".join(trackers)} if trackers else {})}
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
    return Built(tag, image.id, int(image.attrs.get("Size") or 0), time.monotonic() - started, digests, trackers)


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
