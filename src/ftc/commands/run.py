"""``ftc run``: train a plan, here, in its image, on a Ray cluster, or as one node of several."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ftc.runtime.launch.handoff import rendezvous_options

from ._notes import note

if TYPE_CHECKING:
    from ftc.runtime.launch.handoff import Rendezvous


@click.command("run")
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the plan's output folder.")
@rendezvous_options
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "docker", "ray"]),
    default="auto",
    show_default=True,
    help=(
        "local: this Python environment. docker: the plan's image, through the engine at DOCKER_HOST. "
        "ray: a Ray cluster (--address), through Ray Train. "
        "auto: docker when the plan names an image and an engine answers, else local."
    ),
)
@click.option("--address", "ray_address", metavar="ADDR", help="ray backend: the cluster (default: RAY_ADDRESS).")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="ray backend: how many times a failed worker group is restarted (each restart resumes).",
)
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help=(
        "docker backend: GPUs for the container: "
        "auto (all when the engine has the NVIDIA runtime), all, none, or a number."
    ),
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="PATH",
    help="docker backend: also mount PATH read-only at the same path (repeatable).",
)
def run_command(
    plan: Path,
    resume: bool,
    backend: str,
    ray_address: str | None,
    max_failures: int,
    gpus: str,
    mounts: tuple[str, ...],
    rendezvous: Rendezvous,
) -> None:
    """Train: validate PLAN, check every input against its pinned digest, then run it (DeepSpeed).

    A multi-node plan runs one `ftc run PLAN --node-rank K --master-addr HOST` per machine.
    """
    import signal

    from ftc.runtime.launch import run

    # `kill` (SIGTERM), or the terminal or SSH session going away (SIGHUP), stops a run the way Ctrl-C does: worker
    # processes and containers are cleaned up
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    run(
        plan,
        backend=backend,
        gpus=gpus,
        mounts=mounts,
        ray_address=ray_address,
        max_failures=max_failures,
        log=note,
        resume=resume,
        rendezvous=rendezvous,
    )
