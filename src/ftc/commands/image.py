"""``ftc image build``: the runtime images, built from a checkout of ftc."""

from __future__ import annotations

from pathlib import Path

import click

from ftc.images.build import FLAVORS

from ._notes import note


@click.group("image")
def image_group() -> None:
    """Build the runtime images (from a checkout of ftc)."""


@image_group.command("build")
@click.argument("flavor", type=click.Choice(FLAVORS), default="cpu")
@click.option(
    "-t",
    "--tag",
    help="Tag for the image. Default: ftc-runtime:<version>-<flavor> (-<trackers>-<flavor> with --tracker).",
)
@click.option(
    "--context",
    type=click.Path(path_type=Path, file_okay=False),
    help="The checkout to build from. Default: the one this ftc runs from.",
)
@click.option(
    "--base",
    metavar="IMAGE",
    help="The base image (any with Python 3.11, venv and CA certificates; images/debian-base.sh makes one offline)."
    " Default: the pinned python:3.11 image of images/versions.txt.",
)
@click.option(
    "--network",
    metavar="MODE",
    help="The network of the build's RUN steps (e.g. host, where the engine has no bridge). Default: the engine's.",
)
@click.option(
    "--tracker",
    "trackers",
    multiple=True,
    metavar="NAME",
    help="The tracker variant: also install this tracker's client (mlflow, wandb or tensorboard: what a spec's"
    " `logger:` needs), at its pin in images/versions.txt (repeatable). Default: none.",
)
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="NAME=VALUE", help="Passed to the Dockerfile (repeatable)."
)
def image_build(
    flavor: str,
    tag: str | None,
    context: Path | None,
    base: str | None,
    network: str | None,
    trackers: tuple[str, ...],
    build_args: tuple[str, ...],
) -> None:
    """Build images/Dockerfile.FLAVOR through the engine at DOCKER_HOST and tag it.

    A spec with `logger:` runs in the tracker variant: `--tracker mlflow` (wandb, tensorboard; repeatable) installs
    that client too, pinned like the rest (default tag ftc-runtime:<version>-mlflow-<flavor>).

    Offline: `--base` an image made by images/debian-base.sh, `--network host`, and `--build-arg PIP_INDEX_URL=...`
    (or PIP_EXTRA_INDEX_URL, TORCH_INDEX_URL for the CPU image's torch) naming an index this machine reaches."""
    from ftc.errors import UsageError
    from ftc.images.build import build_image

    args = {}
    for item in build_args:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--build-arg {item}: give NAME=VALUE")
        args[name] = value
    if base:
        args["BASE_IMAGE"] = base
    built = build_image(
        flavor,
        tag=tag,
        context=context,
        build_args=args,
        network=network,
        trackers=trackers,
        log=note,
    )
    carries = f" with the tracker clients of {', '.join(built.trackers)}" if built.trackers else ""
    click.echo(
        f"built {built.tag} ({built.image_id}, {built.size_bytes / 1e9:.2f} GB){carries} in {built.seconds:.0f} s;"
        f" name it in a spec (`image: {built.tag}`): `ftc compile` pins it {built.pinned_by()}"
    )
